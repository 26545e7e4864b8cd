//! Paging a long history with `?before=&limit=`: workers hold only the newest messages of a
//! conversation (`MESHCHAT_HISTORY_LIMIT=6` here); pages further back come from the log. Paged
//! through the owner and through another worker, and again after the owner restarted: the pages
//! add up to the conversation's records in `chat.messages`, each once, in order.

use std::time::Duration;

use meshchat_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Every message of `conv` through `base`, paging back `limit` at a time; with the number of
/// pages.
async fn page_back(base: &str, conv: &str, limit: usize) -> anyhow::Result<(Vec<String>, usize)> {
    let mut ids: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{base}/api/chat/conversation/{conv}?limit={limit}");
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let resp = http().get(&url).bearer_auth(auth::admin("ann")).send().await?;
        anyhow::ensure!(resp.status() == 200, "{url}: {}", resp.status());
        let page: Value = resp.json().await?;
        pages += 1;
        let got: Vec<String> = page["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(
            got.len() <= limit,
            "a page of {} over the limit {limit}",
            got.len()
        );
        ids.splice(0..0, got.iter().cloned());
        if page["hasMore"] != true {
            return Ok((ids, pages));
        }
        anyhow::ensure!(!got.is_empty(), "an empty page that says more exist");
        before = got.first().cloned();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_history_pages_back_to_its_first_message_from_any_worker_and_after_a_restart()
-> anyhow::Result<()> {
    let StaticPair {
        bootstrap,
        prefix,
        llm: _llm,
        mut workers,
    } = static_pair("history", &[("MESHCHAT_HISTORY_LIMIT", "6")]).await?;
    let conv = conversations_on("long", 4, 0..2).next().unwrap_or_default();
    for i in 0..12 {
        let id = send(&workers[1].url, &conv, "ann", &format!("question {i}")).await?;
        wait_reply(&workers[0].url, &conv, &id, T).await?;
    }
    // the log's order: what the pages must add up to
    let log = read_topic(&bootstrap, &format!("{prefix}chat.messages")).await?;
    let key = meshchat_wire::conversation_key("default", &conv);
    let want: Vec<String> = log
        .iter()
        .filter(|r| r.key == key)
        .filter_map(|r| r.value["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(want.len(), 24, "12 messages and their replies");
    // what a worker holds: the newest, saying more exist
    let whole: Value = http()
        .get(format!("{}/api/chat/conversation/{conv}", workers[0].url))
        .bearer_auth(auth::admin("ann"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(whole["hasMore"], true, "{whole}");
    assert!(whole["messages"].as_array().map_or(0, Vec::len) <= 6);
    for (i, limit) in [(0, 5), (1, 7), (1, 100)] {
        let (ids, pages) = page_back(&workers[i].url, &conv, limit).await?;
        println!(
            "through node-{i}, {limit} a page: {} messages in {pages} pages",
            ids.len()
        );
        assert_eq!(ids, want, "through node-{i}, {limit} a page");
    }
    workers[0].kill().await?;
    workers[0].restart().await?;
    let (ids, pages) = page_back(&workers[1].url, &conv, 5).await?;
    println!(
        "after the owner restarted: {} messages in {pages} pages",
        ids.len()
    );
    assert_eq!(ids, want);
    let (ids, _) = page_back(&workers[0].url, &conv, 9).await?;
    assert_eq!(ids, want);
    Ok(())
}
