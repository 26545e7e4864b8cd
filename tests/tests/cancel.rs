//! Cancelling a reply while it streams, from the worker that does not own the conversation:
//! the LLM's stream is dropped, the text so far is the reply (marked cancelled), and the
//! conversation's next message is answered. Real workers, a real broker, the fake LLM counting
//! the streams it saw dropped; the log as ground truth.

use std::time::{Duration, Instant};

use meshchat_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// `POST /api/chat/conversation/{id}/cancel` as the default tenant's admin.
async fn cancel(base: &str, conversation: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .post(format!("{base}/api/chat/conversation/{conversation}/cancel"))
        .bearer_auth(auth::admin("ann"))
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_cancelled_from_another_worker_keeps_its_text_so_far() -> anyhow::Result<()> {
    let StaticPair {
        bootstrap,
        prefix,
        llm,
        workers,
    } = static_pair("cancel", &[]).await?;
    // a conversation node-0 owns; everything below goes through node-1
    let conv = (0..100)
        .map(|i| format!("story-{i}"))
        .find(|c| meshchat_wire::partition_for(&meshchat_wire::conversation_key("default", c), 4) < 2)
        .unwrap_or_default();
    let (owner, other) = (&workers[0].url, &workers[1].url);

    // nothing under way: accepted, and nothing changes
    let (status, body) = cancel(other, &conv).await?;
    assert_eq!(status, 404, "no such conversation yet: {body}");
    let first = send(other, &conv, "ann", "hello").await?;
    wait_reply(owner, &conv, &first, T).await?;
    let (status, body) = cancel(other, &conv).await?;
    assert_eq!(
        (status, body["message"].as_str()),
        (202, Some("Cancel requested")),
        "{body}"
    );

    // a slow reply (200 ms a token, ~3 s in all), cancelled once it has begun
    let slow = send(
        other,
        &conv,
        "ann",
        "[tag:story] [slow:200] tell me a long story please",
    )
    .await?;
    wait_for("the first tokens", T, || async {
        (llm.calls("story").await.ok()? > 0).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let asked = Instant::now();
    let (status, _) = cancel(other, &conv).await?;
    assert_eq!(status, 202);
    let reply = wait_reply(other, &conv, &slow, T).await?;
    let took = asked.elapsed();
    let text = reply["content"].as_str().unwrap_or_default().to_string();
    println!("cancelled after {took:?} with {:?}", text);
    assert_eq!(reply["cancelled"], true, "{reply}");
    assert!(reply["error"].is_null(), "{reply}");
    let whole = r#"Reply to "[tag:story] [slow:200] tell me a long story please" (turn 2,"#;
    assert!(
        !text.is_empty() && whole.starts_with(&text) && text.len() < whole.len(),
        "the text so far: {text:?}"
    );
    // the LLM saw its stream dropped
    let stats = llm.stats().await?;
    assert!(stats["aborted"].as_u64() >= Some(1), "{stats}");
    assert!(stats["abortedAtMs"]["story"].is_u64(), "{stats}");

    // the next message is answered, in full, with the cancelled text as its context
    let next = send(other, &conv, "ann", "and the ending?").await?;
    let reply = wait_reply(owner, &conv, &next, T).await?;
    assert!(reply["cancelled"].is_null(), "{reply}");
    assert!(
        reply["content"]
            .as_str()
            .is_some_and(|t| t.starts_with(r#"Reply to "and the ending?" (turn 3,"#)),
        "{reply}"
    );

    // ground truth: three messages, each answered once; the LLM was asked once for the story
    let log = read_topic(&bootstrap, &format!("{prefix}chat.messages")).await?;
    let tally = Tally::of(&log);
    let ids = vec![first, slow, next];
    assert_eq!(tally.outcome(&ids), (3, 0, 0));
    assert_eq!(tally.sent(), 3);
    assert_eq!(llm.calls("story").await?, 1);
    let cancels = log.iter().filter(|r| r.value["type"] == "cancelRequest").count();
    assert_eq!(cancels, 2, "both requests are in the log");
    drop(workers);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_interrupt_a_new_message_cancels_the_reply_under_way() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("interrupt");
    let llm = FakeLlm::start(&[]).await?;
    let w = Worker::start(
        WorkerSpec::new("w", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_WHILE_REPLYING", "interrupt"),
    )
    .await?;
    let conv = "chatty";
    let slow = send(
        &w.url,
        conv,
        "ann",
        "[tag:long] [slow:200] tell me a long story please",
    )
    .await?;
    wait_for("the first tokens", T, || async {
        (llm.calls("long").await.ok()? > 0).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let newer = send(&w.url, conv, "ann", "actually, just say hi").await?;
    let cut = wait_reply(&w.url, conv, &slow, T).await?;
    let text = cut["content"].as_str().unwrap_or_default();
    assert_eq!(cut["cancelled"], true, "{cut}");
    assert!(!text.is_empty() && text.len() < 40, "the text so far: {text:?}");
    let answer = wait_reply(&w.url, conv, &newer, T).await?;
    assert!(answer["cancelled"].is_null(), "{answer}");
    assert!(
        answer["content"]
            .as_str()
            .is_some_and(|t| t.starts_with(r#"Reply to "actually, just say hi""#)),
        "{answer}"
    );
    assert!(llm.stats().await?["aborted"].as_u64() >= Some(1));
    let log = read_topic(&bootstrap, &format!("{prefix}chat.messages")).await?;
    assert_eq!(Tally::of(&log).outcome(&[slow, newer]), (2, 0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_a_move_of_the_conversation_stops_its_reply_once() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mesh = TestMesh::start(
        "cancel-move",
        MeshOptions {
            workers: 2,
            partitions: 4,
            ..Default::default()
        },
    )
    .await?;
    let from = mesh.owned(0).await.unwrap_or_default();
    let conv = (0..100)
        .map(|i| format!("moving-{i}"))
        .find(|c| {
            let p = meshchat_wire::partition_for(&meshchat_wire::conversation_key("default", c), 4);
            from.contains(&i64::from(p))
        })
        .unwrap_or_default();
    let p = i64::from(meshchat_wire::partition_for(
        &meshchat_wire::conversation_key("default", &conv),
        4,
    ));
    let (a, b) = (&mesh.workers[0].url, &mesh.workers[1].url);
    let slow = send(b, &conv, "ann", "[tag:moving] [slow:200] [big:20000] a long one").await?;
    wait_for("the first tokens", T, || async {
        (mesh.llm.calls("moving").await.ok()? > 0).then_some(())
    })
    .await?;
    // the conversation's partition moves to node-1 while its reply streams, and the cancel
    // comes at once: the old owner (releasing) or the new one (replaying) stops the reply
    let moved = http()
        .post(format!("{a}/api/agent/migrate"))
        .bearer_auth(auth::operator())
        .json(&serde_json::json!({"targetNode": "node-1", "partitions": [p]}))
        .send()
        .await?;
    assert_eq!(moved.status(), 200);
    let (status, _) = cancel(b, &conv).await?;
    assert_eq!(status, 202);
    let reply = wait_reply(b, &conv, &slow, T).await?;
    println!(
        "cancelled reply by {} with {:?}",
        reply["node"],
        reply["content"]
            .as_str()
            .map(|t| t.chars().take(40).collect::<String>())
    );
    assert_eq!(reply["cancelled"], true, "{reply}");
    mesh.wait_owned_by(&[0, 1], T).await?;
    assert!(
        mesh.owned(1).await.unwrap_or_default().contains(&p),
        "the partition moved"
    );
    let next = send(a, &conv, "ann", "and now?").await?;
    let answer = wait_reply(a, &conv, &next, T).await?;
    assert!(
        answer["cancelled"].is_null() && answer["error"].is_null(),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // let any duplicate surface
    let log = read_topic(&mesh.bootstrap, &format!("{}chat.messages", mesh.prefix)).await?;
    let tally = Tally::of(&log);
    assert_eq!(tally.outcome(&[slow, next]), (2, 0, 0), "each answered once");
    Ok(())
}
