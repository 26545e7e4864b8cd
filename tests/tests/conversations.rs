//! `GET /api/chat/conversations`: each user's conversations, most recent first, paged, from
//! the conversation index every worker reads — across partitions owned by different workers,
//! through either worker, and after a worker restarted (its index read again from the topic).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshchat_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Every page of `token`'s list through `base`, `limit` at a time: (id, messageCount) in order.
async fn list_all(base: &str, token: &str, limit: usize) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/chat/conversations?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let resp = http().get(&url).bearer_auth(token).send().await?;
        anyhow::ensure!(resp.status() == 200, "{url}: {}", resp.status());
        let page: Value = resp.json().await?;
        let items = page["conversations"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(items.len() <= limit);
        out.extend(items.iter().map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["messageCount"].as_u64().unwrap_or(0),
            )
        }));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_user_lists_its_conversations_most_recent_first_from_any_worker_and_after_a_restart()
-> anyhow::Result<()> {
    let StaticPair {
        bootstrap: _,
        prefix: _,
        llm: _llm,
        mut workers,
    } = static_pair("convlist", &[]).await?;
    // ann starts 7 conversations, bob 3; one of ann's gets a second exchange last
    let (ann, bob) = (
        auth::jwt("default", "ann", "user"),
        auth::jwt("default", "bob", "user"),
    );
    let mut partitions = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for i in 0..10 {
        let (who, token) = if i % 3 == 2 { ("bob", &bob) } else { ("ann", &ann) };
        let conv = format!("{who}-topic-{i}");
        let p = meshchat_wire::partition_for(&meshchat_wire::conversation_key("default", &conv), 4);
        *partitions.entry(p).or_insert(0) += 1;
        let id = send_as(
            &workers[i % 2].url,
            token,
            &conv,
            who,
            &format!("[{i}] what about topic {i}?"),
        )
        .await?;
        wait_reply(&workers[0].url, &conv, &id, T).await?;
        order.insert(0, conv);
    }
    println!("conversations per partition: {partitions:?}");
    assert!(partitions.len() > 1, "spread over partitions of both workers");
    let again = "ann-topic-0".to_string();
    let id = send_as(&workers[1].url, &ann, &again, "ann", "and one more thing").await?;
    wait_reply(&workers[0].url, &again, &id, T).await?;
    let replied = Instant::now();
    order.retain(|c| *c != again);
    order.insert(0, again.clone());
    let want = |who: &str| -> Vec<(String, u64)> {
        order
            .iter()
            .filter(|c| c.starts_with(who))
            .map(|c| (c.clone(), if *c == again { 4 } else { 2 }))
            .collect()
    };
    // in the lists once the owners wrote their entries (every second)
    wait_for("the lists", T, || async {
        (list_all(&workers[1].url, &ann, 100).await.ok()? == want("ann")).then_some(())
    })
    .await?;
    println!(
        "the second exchange showed in a list {:?} after its reply",
        replied.elapsed()
    );
    for (base, limit) in [(&workers[0].url, 3), (&workers[1].url, 2), (&workers[0].url, 100)] {
        assert_eq!(
            list_all(base, &ann, limit).await?,
            want("ann"),
            "{base}, {limit} a page"
        );
        assert_eq!(
            list_all(base, &bob, limit).await?,
            want("bob"),
            "{base}, {limit} a page"
        );
    }
    // an admin lists the whole tenant; another tenant sees none of it
    let all = list_all(&workers[0].url, &auth::admin("root"), 4).await?;
    assert_eq!(all.len(), 10);
    assert!(
        list_all(&workers[0].url, &auth::jwt("acme", "alice", "user"), 10)
            .await?
            .is_empty()
    );
    // a restarted worker reads the index again
    workers[1].kill().await?;
    workers[1].restart().await?;
    let reread = wait_for("the index read again", T, || async {
        list_all(&workers[1].url, &ann, 3).await.ok()
    })
    .await?;
    assert_eq!(reread, want("ann"));
    Ok(())
}

/// `GET /api/chat/conversation/{id}` through `base` as the default tenant's admin: status.
async fn get_status(base: &str, path: &str) -> anyhow::Result<u16> {
    let resp = http()
        .get(format!("{base}{path}"))
        .bearer_auth(auth::admin("root"))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_conversation_is_served_nowhere_and_leaves_tombstones() -> anyhow::Result<()> {
    let StaticPair {
        bootstrap,
        prefix,
        llm: _llm,
        mut workers,
    } = static_pair("convdel", &[]).await?;
    let ann = auth::jwt("default", "ann", "user");
    // a conversation node-0 owns, and one that stays
    let mut convs = conversations_on("secret", 4, 0..2);
    let (conv, kept) = (convs.next().unwrap_or_default(), convs.next().unwrap_or_default());
    for (c, n) in [(&conv, 3), (&kept, 1)] {
        for i in 0..n {
            let id = send_as(&workers[1].url, &ann, c, "ann", &format!("private matter {i}")).await?;
            wait_reply(&workers[0].url, c, &id, T).await?;
        }
    }
    wait_for("both listed", T, || async {
        (list_all(&workers[1].url, &ann, 10).await.ok()?.len() == 2).then_some(())
    })
    .await?;
    // deleted through the worker that does not own it: served no more once it answers
    let resp = http()
        .delete(format!("{}/api/chat/conversation/{conv}", workers[1].url))
        .bearer_auth(&ann)
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let asked = Instant::now();
    for w in &workers {
        for path in [
            format!("/api/chat/conversation/{conv}"),
            format!("/api/chat/conversation/{conv}?limit=5"),
        ] {
            assert_eq!(get_status(&w.url, &path).await?, 404, "{} {path}", w.url);
        }
    }
    let listed = wait_for("gone from the lists", T, || async {
        let l = list_all(&workers[1].url, &ann, 10).await.ok()?;
        (l.len() == 1).then_some(l)
    })
    .await?;
    println!(
        "gone from the list {:?} after the delete answered",
        asked.elapsed()
    );
    assert_eq!(listed[0].0, kept);
    // its snapshot and index entry have tombstones; the log keeps its records until retention
    let key = meshchat_wire::conversation_key("default", &conv);
    for topic in ["chat.conversations", "chat.index"] {
        let records = read_topic(&bootstrap, &format!("{prefix}{topic}")).await?;
        let last = records.iter().rev().find(|r| r.key == key);
        assert!(
            last.is_some_and(|r| r.value.is_null()),
            "{topic}: the last record of {key} is a tombstone"
        );
    }
    // the owner restarted: still gone (no snapshot, the deletion replayed or committed past)
    workers[0].kill().await?;
    workers[0].restart().await?;
    wait_for("the kept conversation served again", T, || async {
        (get_status(&workers[0].url, &format!("/api/chat/conversation/{kept}"))
            .await
            .ok()?
            == 200)
            .then_some(())
    })
    .await?;
    assert_eq!(
        get_status(&workers[0].url, &format!("/api/chat/conversation/{conv}")).await?,
        404
    );
    assert_eq!(
        get_status(&workers[1].url, &format!("/api/chat/conversation/{conv}")).await?,
        404
    );
    // the same id again: a new conversation, with nothing of the old one
    let id = send_as(&workers[1].url, &ann, &conv, "ann", "starting over").await?;
    wait_reply(&workers[0].url, &conv, &id, T).await?;
    let view: Value = http()
        .get(format!(
            "{}/api/chat/conversation/{conv}?limit=100",
            workers[1].url
        ))
        .bearer_auth(&ann)
        .send()
        .await?
        .json()
        .await?;
    let contents: Vec<&str> = view["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["content"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(contents.len(), 2, "{view}");
    assert!(contents.iter().all(|c| !c.contains("private matter")), "{view}");
    Ok(())
}
