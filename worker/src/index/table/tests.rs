use proptest::prelude::*;

use meshchat_wire::conversation_key;

use super::*;

fn key_of(e: &IndexEntry) -> String {
    conversation_key(&e.tenant, &e.conversation_id)
}

fn entry(tenant: &str, id: &str, users: &[&str], last_ms: i64, count: u64) -> IndexEntry {
    IndexEntry {
        v: 1,
        tenant: tenant.into(),
        conversation_id: id.into(),
        title: format!("about {id}"),
        participants: users.iter().map(|u| (*u).to_string()).collect(),
        last_activity_ms: last_ms,
        message_count: count,
    }
}

fn put(index: &mut ConversationIndex, e: &IndexEntry) -> bool {
    index.upsert(&key_of(e), e)
}

/// Every page of a list, following cursors.
fn walk(index: &ConversationIndex, tenant: &str, user: Option<&str>, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = index.list(tenant, user, after, limit);
        assert!(page.items.len() <= limit);
        out.extend(page.items.iter().map(|l| l.id.clone()));
        match page.next {
            // a cursor survives its text form, as a client sends it back
            Some(c) => after = Some(c.to_string().parse().expect("a cursor")),
            None => return out,
        }
    }
}

#[test]
fn lists_are_most_recent_first_per_tenant_and_per_user() {
    let mut index = ConversationIndex::default();
    put(&mut index, &entry("acme", "a", &["ann"], 100, 2));
    put(&mut index, &entry("acme", "b", &["bob"], 300, 2));
    put(&mut index, &entry("acme", "c", &["ann", "bob"], 200, 4));
    put(&mut index, &entry("globex", "a", &["ann"], 999, 2));
    assert_eq!(walk(&index, "acme", None, 10), ["b", "c", "a"]);
    assert_eq!(walk(&index, "acme", Some("ann"), 1), ["c", "a"]);
    assert_eq!(walk(&index, "globex", Some("bob"), 5), Vec::<String>::new());
    assert_eq!(walk(&index, "initech", None, 5), Vec::<String>::new());
    let page = index.list("acme", Some("bob"), None, 1);
    assert_eq!((page.total, page.items[0].title.as_str()), (2, "about b"));
    assert_eq!(page.items[0].participants, ["bob"]);
    // new activity moves a conversation up; a deposed owner's older entry does not move it back
    assert!(put(&mut index, &entry("acme", "a", &["ann"], 400, 4)));
    assert!(!put(&mut index, &entry("acme", "a", &["ann"], 150, 3)));
    assert_eq!(walk(&index, "acme", None, 2), ["a", "b", "c"]);
    index.remove(&conversation_key("acme", "b"));
    assert_eq!(walk(&index, "acme", None, 2), ["a", "c"]);
    assert_eq!(walk(&index, "acme", Some("bob"), 2), ["c"]);
    assert_eq!(index.len(), 3);
}

#[test]
fn a_cursor_that_is_not_one_is_refused() {
    for bad in [
        "",
        "12",
        "12.zz",
        "x.0000000000000001",
        "1.01",
        "99999999999999999999.0000000000000001",
    ] {
        assert_eq!(bad.parse::<ListCursor>(), Err(BadListCursor), "{bad:?}");
    }
}

proptest! {
    /// Whatever the writes (updates, deposed owners' stale entries, deletions) and the page
    /// size, walking the pages gives each of the caller's conversations once, most recent
    /// first.
    #[test]
    fn paging_gives_each_conversation_once_in_order(
        writes in prop::collection::vec((0usize..40, 0usize..3, 0i64..50, 0u64..10, any::<bool>()), 1..200),
        limit in 1usize..12,
    ) {
        let users = ["ann", "bob", "cy"];
        let mut index = ConversationIndex::default();
        let mut want: std::collections::BTreeMap<String, (i64, u64, &str)> = Default::default();
        for (conv, user, ms, count, delete) in writes {
            let id = format!("c{conv}");
            if delete && count == 0 {
                index.remove(&conversation_key("t", &id));
                want.remove(&id);
                continue;
            }
            let taken = put(&mut index, &entry("t", &id, &[users[user]], ms, count));
            let newer = want.get(&id).is_none_or(|&(m, c, _)| (count, ms) >= (c, m));
            prop_assert_eq!(taken, newer);
            if newer {
                want.insert(id, (ms, count, users[user]));
            }
        }
        let mut order: Vec<(i64, u64, String)> = want
            .iter()
            .map(|(id, (ms, _, _))| (*ms, tie_of(&conversation_key("t", id)), id.clone()))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let all: Vec<String> = order.iter().map(|(_, _, id)| id.clone()).collect();
        prop_assert_eq!(walk(&index, "t", None, limit), all.clone());
        for u in users {
            let mine: Vec<String> = all.iter().filter(|id| want[*id].2 == u).cloned().collect();
            prop_assert_eq!(walk(&index, "t", Some(u), limit), mine);
        }
    }
}
