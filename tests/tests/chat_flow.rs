//! Send → reply on a real broker: the reply appears in GET (on the owner, through a
//! forwarding worker, and from the log) and on WebSocket and SSE clients of any worker, with
//! the user message, the tokens in order and the final reply.

use std::time::Duration;

use meshchat_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Checks one live stream: the user message, then tokens of one attempt in seq order, then
/// the final reply whose content is the tokens joined.
fn assert_live_order(events: &[Value], message_id: &str) -> usize {
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["message"]["id"] == message_id
                || e["inReplyTo"] == message_id
                || e["message"]["inReplyTo"] == message_id
        })
        .collect();
    assert!(!mine.is_empty(), "no live events for {message_id}: {events:?}");
    assert_eq!(mine[0]["type"], "message", "user message first: {mine:?}");
    let last = mine.last().copied().unwrap_or(&Value::Null);
    assert_eq!(last["type"], "reply", "final reply last: {mine:?}");
    let tokens: Vec<&Value> = mine.iter().copied().filter(|e| e["type"] == "token").collect();
    assert_eq!(tokens.len() + 2, mine.len(), "only tokens in between: {mine:?}");
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["seq"], i as u64, "tokens in order: {tokens:?}");
    }
    let text: String = tokens.iter().filter_map(|t| t["delta"].as_str()).collect();
    assert_eq!(
        text,
        last["message"]["content"].as_str().unwrap_or_default(),
        "tokens add up to the reply"
    );
    tokens.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn reply_reaches_get_ws_and_sse_on_every_worker() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("flow");
    let llm = FakeLlm::start(&["--token-latency-ms", "15"]).await?;
    let owner_spec = WorkerSpec::new("owner", &prefix, &bootstrap, &llm.url)?.env("MESHCHAT_PARTITIONS", "8");
    let peer = format!("owner={}|all", owner_spec.internal_url());
    let owner = Worker::start(owner_spec).await?;
    let front = Worker::start(
        WorkerSpec::new("front", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "8")
            .env("MESHCHAT_OWNED_PARTITIONS", "none")
            .env("MESHCHAT_PEERS", peer),
    )
    .await?;

    let conv = "conv-123";
    let ws_front = connect_ws(&front.url, conv).await?;
    let ws_owner = connect_ws(&owner.url, conv).await?;
    let sse_front = connect_sse(&front.url, conv).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = send(&front.url, conv, "user-456", "Hello, how are you?").await?;
    let reply = wait_reply(&owner.url, conv, &id, T).await?;
    assert_eq!(reply["sender"], "meshchat-agent");
    assert_eq!(reply["node"], "owner");
    assert!(
        reply["content"]
            .as_str()
            .unwrap_or_default()
            .contains("Hello, how are you?"),
        "{reply}"
    );

    // the same answer through the forwarding worker
    let (status_front, via_front) = conversation(&front.url, conv).await?;
    let (_, via_owner) = conversation(&owner.url, conv).await?;
    assert_eq!(status_front, 200);
    assert_eq!(via_front, via_owner);
    assert_eq!(
        via_owner["participants"],
        serde_json::json!(["user-456", "meshchat-agent"])
    );

    for (name, client) in [
        ("ws@front", &ws_front),
        ("ws@owner", &ws_owner),
        ("sse@front", &sse_front),
    ] {
        client
            .wait(name, T, |e| {
                e["type"] == "reply" && e["message"]["inReplyTo"] == id.as_str()
            })
            .await?;
        println!("{name}: {} events", client.events().len());
        let tokens = assert_live_order(&client.events(), &id);
        println!("{name}: user message, {tokens} tokens in order, final reply");
        assert!(tokens > 3, "{name} saw the reply stream token by token");
    }

    // presence: a user's live connection shows as online, then offline, to other watchers
    let user_ws = connect_ws_as(
        &owner.url,
        &format!("conversationId={conv}&presence"),
        Some(&auth::admin("carol")),
    )
    .await?;
    let is = |kind: &'static str| {
        move |e: &Value| e["type"] == "presence" && e["userId"] == "carol" && e["kind"] == kind
    };
    ws_front.wait("carol online", T, is("online")).await?;
    drop(user_ws);
    ws_front.wait("carol offline", T, is("offline")).await?;
    assert!(
        ws_front
            .events()
            .iter()
            .any(|e| e["type"] == "presence" && e["userId"] == "user-456" && e["kind"] == "joined")
    );

    // a second turn carries the first as context
    let id2 = send(&owner.url, conv, "user-456", "And a follow-up").await?;
    let reply2 = wait_reply(&front.url, conv, &id2, T).await?;
    assert!(
        reply2["content"].as_str().unwrap_or_default().contains("turn 2"),
        "{reply2}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_without_owner_or_peers_reads_the_log() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("logread");
    let llm = FakeLlm::start(&[]).await?;
    let owner = Worker::start(
        WorkerSpec::new("owner", &prefix, &bootstrap, &llm.url)?.env("MESHCHAT_PARTITIONS", "4"),
    )
    .await?;
    let reader = Worker::start(
        WorkerSpec::new("reader", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_OWNED_PARTITIONS", "none"),
    )
    .await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send(&reader.url, "log-conv", "ann", &format!("message {i}")).await?);
    }
    for id in &ids {
        wait_reply(&owner.url, "log-conv", id, T).await?;
    }
    let (_, from_owner) = conversation(&owner.url, "log-conv").await?;
    let (status, from_log) = conversation(&reader.url, "log-conv").await?;
    assert_eq!(status, 200);
    assert_eq!(from_log, from_owner, "the log read gives the owner's answer");
    assert_eq!(from_log["messages"].as_array().map(Vec::len), Some(6));
    let (missing, body) = conversation(&reader.url, "never-written").await?;
    assert_eq!(missing, 404, "{body}");
    Ok(())
}

/// `--chunk-interval-ms`: tokens of one reply leave at most once per interval, together, and
/// still add up to the reply on the live stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_interval_gathers_tokens_into_fewer_pieces() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("pace");
    // the fake LLM's reply is ~16 words, one token each, 30 ms apart: ~480 ms of streaming
    let llm = FakeLlm::start(&["--token-latency-ms", "30"]).await?;
    let worker = Worker::start(
        WorkerSpec::new("paced", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_CHUNK_INTERVAL_MS", "150"),
    )
    .await?;
    let conv = "paced-conv";
    let ws = connect_ws(&worker.url, conv).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = send(
        &worker.url,
        conv,
        "dana",
        "please answer with a dozen words or so",
    )
    .await?;
    ws.wait("ws", T, |e| {
        e["type"] == "reply" && e["message"]["inReplyTo"] == id.as_str()
    })
    .await?;
    let pieces = assert_live_order(&ws.events(), &id);
    let reply = wait_reply(&worker.url, conv, &id, T).await?;
    let words = reply["content"].as_str().unwrap_or_default().split(' ').count();
    println!("{words} tokens streamed as {pieces} pieces");
    assert!(words >= 8, "a reply long enough to pace: {reply}");
    // ~480 ms / 150 ms: the first piece, about three more and the rest at the end; every token
    // as it arrives would be one piece per token
    assert!(
        pieces >= 2 && pieces * 2 <= words,
        "{pieces} pieces for {words} tokens"
    );
    Ok(())
}
