//! Live delivery fetches a record once in the mesh: a client of a conversation another worker
//! owns is relayed the owner's events instead of its worker reading the partition too. Two
//! static workers, each watched for a conversation the *other* owns: each worker's fan-out
//! reads one partition (its own conversation's, relayed to the other), and both clients get the
//! message, every token and the reply once, in order.

use std::time::Duration;

use meshchat_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The types of `events` for the reply to `message`, tokens collapsed: must be message,
/// token…, reply; and the tokens' seqs 0, 1, …
fn shape(events: &[Value], message: &str) -> (Vec<String>, Vec<u64>) {
    let ours: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["inReplyTo"] == message || e["message"]["inReplyTo"] == message || e["message"]["id"] == message
        })
        .collect();
    let mut kinds: Vec<String> = ours
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.dedup();
    let seqs = ours
        .iter()
        .filter(|e| e["type"] == "token")
        .map(|e| e["seq"].as_u64().unwrap_or(99))
        .collect();
    (kinds, seqs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_a_conversation_another_worker_owns_is_relayed_and_each_partition_read_once()
-> anyhow::Result<()> {
    let _serial = serial().await;
    let pair = static_pair("relay", &[]).await?;
    let (w0, w1) = (&pair.workers[0], &pair.workers[1]);
    for w in [w0, w1] {
        assert_eq!(
            gauge(&w.internal_url, "meshchat_live_partitions").await,
            Some(0),
            "nothing watched yet"
        );
    }
    // node-0 owns partitions 0–1, node-1 2–3
    let on0 = conversations_on("relay-a", 4, 0..2).next().unwrap_or_default();
    let on1 = conversations_on("relay-b", 4, 2..4).next().unwrap_or_default();
    let token = auth::admin("harness");
    let watch0 = connect_sse_from(&w1.url, &on0, Some(&token), None).await?;
    let watch1 = connect_sse_from(&w0.url, &on1, Some(&token), None).await?;
    let m0 = send(&w1.url, &on0, "ann", "[slow:20] hello through a relay").await?;
    let m1 = send(&w0.url, &on1, "bob", "[slow:20] hello through a relay").await?;
    for (client, m) in [(&watch0, &m0), (&watch1, &m1)] {
        client
            .wait("the reply", T, |e| {
                e["type"] == "reply" && e["message"]["inReplyTo"] == *m
            })
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // anything repeated would show now
    for (client, m) in [(&watch0, &m0), (&watch1, &m1)] {
        let events = client.events();
        let (kinds, seqs) = shape(&events, m);
        assert_eq!(kinds, ["message", "token", "reply"], "{events:#?}");
        assert!(!seqs.is_empty());
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "an id twice");
    }
    // each fan-out reads the one partition it owns a watched conversation in, not the other's
    for w in [w0, w1] {
        assert_eq!(
            gauge(&w.internal_url, "meshchat_live_partitions").await,
            Some(1),
            "{}",
            w.url
        );
    }
    Ok(())
}
