use super::{TailFetch, commit_metadata, fence_of_commit, parse_properties, tail_consumer};

#[test]
fn commit_metadata_round_trips_and_tolerates_foreign_commits() {
    for e in [0, 1, 7, u64::MAX] {
        assert_eq!(fence_of_commit(&commit_metadata(e)), e);
    }
    // commits written before fences were recorded, or by other tools
    assert_eq!(fence_of_commit(""), 0);
    assert_eq!(fence_of_commit("fence=x"), 0);
    assert_eq!(fence_of_commit("something else"), 0);
}

#[test]
fn reading_starts_at_the_commit_and_its_fence_or_at_the_log_start() {
    use super::commit_start;
    use rdkafka::{Offset, TopicPartitionList};
    let mut tpl = TopicPartitionList::new();
    let mut e = tpl.add_partition("m", 0);
    e.set_offset(Offset::Offset(40)).expect("offset");
    e.set_metadata(commit_metadata(3));
    tpl.add_partition("m", 1)
        .set_offset(Offset::Offset(5))
        .expect("offset");
    tpl.add_partition("m", 2);
    assert_eq!(commit_start(&tpl, "m", 0, 10), (40, 3));
    // committed before retention removed it: start at the log start, no fence known
    assert_eq!(commit_start(&tpl, "m", 1, 10), (10, 0));
    // never committed
    assert_eq!(commit_start(&tpl, "m", 2, 0), (0, 0));
    assert_eq!(commit_start(&tpl, "m", 7, 0), (0, 0));
}

#[test]
fn properties_parse_as_pairs_and_bad_items_are_named() {
    assert_eq!(
        parse_properties(" security.protocol=SASL_SSL, sasl.mechanism = PLAIN ,"),
        Ok(vec![
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("sasl.mechanism".to_string(), "PLAIN".to_string())
        ])
    );
    assert_eq!(parse_properties(""), Ok(vec![]));
    let err = parse_properties("a=1,oops").expect_err("no =");
    assert!(err.contains("oops"), "{err}");
}

#[test]
fn tail_consumers_long_poll_unless_batching() {
    let base = rdkafka::ClientConfig::new();
    let poll = tail_consumer(&base, "g", TailFetch::from_batch_ms(0));
    assert_eq!(poll.get("fetch.wait.max.ms"), Some("500"));
    assert_eq!(poll.get("fetch.min.bytes"), None);
    assert_eq!(poll.get("enable.auto.commit"), Some("false"));
    let batch = tail_consumer(&base, "g", TailFetch::from_batch_ms(7));
    assert_eq!(batch.get("fetch.wait.max.ms"), Some("7"));
    assert_eq!(batch.get("fetch.min.bytes"), Some("1048576"));
}

#[test]
fn snapshots_of_the_same_id_in_two_tenants_are_both_kept() {
    use std::collections::HashMap;

    use crate::ConversationSnapshot;
    let snap = |tenant: &str, last_offset: i64| ConversationSnapshot {
        v: 1,
        conversation_id: "c".into(),
        tenant: tenant.into(),
        participants: vec!["u".into()],
        entries: Vec::new(),
        pending: Vec::new(),
        last_offset,
        keyed: Vec::new(),
        refused: Vec::new(),
        unstored: Vec::new(),
        trimmed: false,
        title: None,
        message_count: 0,
        epoch: 1,
    };
    let mut latest = HashMap::new();
    super::logread::keep_newest(&mut latest, snap("acme", 5), 10);
    super::logread::keep_newest(&mut latest, snap("globex", 3), 11);
    super::logread::keep_newest(&mut latest, snap("acme", 4), 12);
    assert_eq!(latest.len(), 2, "one per tenant");
    assert_eq!(
        (latest["acme/c"].0.last_offset, latest["acme/c"].1),
        (5, 10),
        "the newer of acme's"
    );
    assert_eq!(latest["globex/c"].0.last_offset, 3);
}
