//! LLM failures — 5xx, 4xx, stalls, a stall mid-stream, refused connections — become explicit
//! error replies after bounded retries; no user message is left unanswered.

use std::time::Duration;

use meshchat_tests::*;

const T: Duration = Duration::from_secs(60);

fn failing_worker(node: &str, prefix: &str, bootstrap: &str, llm: &str) -> anyhow::Result<WorkerSpec> {
    Ok(WorkerSpec::new(node, prefix, bootstrap, llm)?
        .env("MESHCHAT_PARTITIONS", "4")
        .env("MESHCHAT_LLM_RETRIES", "2")
        .env("MESHCHAT_LLM_BACKOFF_MS", "50")
        .env("MESHCHAT_LLM_TIMEOUT_SECS", "1"))
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_become_error_replies_and_nothing_is_lost() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("llmfail");
    let llm = FakeLlm::start(&[]).await?;
    let w = Worker::start(failing_worker("w", &prefix, &bootstrap, &llm.url)?).await?;

    // (conversation, content, expected error kind or None, expected attempts seen by the LLM)
    let cases: [(&str, &str, Option<&str>, u64); 5] = [
        ("c-500", "[tag:a] [fail:500] hello", Some("upstream"), 3),
        ("c-once", "[tag:b] [fail-once:503] hello", None, 2),
        ("c-stall", "[tag:c] [stall] hello", Some("timeout"), 3),
        ("c-400", "[tag:d] [fail:400] hello", Some("rejected"), 1),
        (
            "c-mid",
            "[tag:e] [stall-mid] hello there friend",
            Some("timeout"),
            3,
        ),
    ];
    let ws = connect_ws(&w.url, "c-mid").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent = Vec::new();
    for (conv, content, _, _) in &cases {
        sent.push(send(&w.url, conv, "u", content).await?);
    }
    for ((conv, content, kind, _), id) in cases.iter().zip(&sent) {
        let reply = wait_reply(&w.url, conv, id, T).await?;
        match kind {
            Some(kind) => {
                assert_eq!(reply["error"]["kind"], *kind, "{content}: {reply}");
                assert!(
                    reply["content"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("[error]"),
                    "{reply}"
                );
            }
            None => assert!(reply["error"].is_null(), "{content} recovered on retry: {reply}"),
        }
    }
    let stats = llm.stats().await?;
    for ((_, content, _, attempts), tag) in cases.iter().zip(["a", "b", "c", "d", "e"]) {
        assert_eq!(
            stats["byTag"][tag], *attempts,
            "LLM attempts for {content}: {stats}"
        );
    }
    assert_eq!(
        cases
            .iter()
            .zip(&sent)
            .filter(|((_, _, k, _), _)| k.is_some())
            .count(),
        4
    );
    // the stalled-mid-stream reply streamed its first tokens live, then the error reply
    ws.wait("error reply on ws", T, |e| {
        e["type"] == "reply" && e["message"]["inReplyTo"] == sent[4].as_str()
    })
    .await?;
    // (tokens that arrive together are streamed as one piece: count text, not frames)
    let streamed: String = ws
        .events()
        .iter()
        .filter(|e| e["type"] == "token" && e["inReplyTo"] == sent[4].as_str())
        .filter_map(|e| e["delta"].as_str().map(str::to_string))
        .collect();
    assert!(
        streamed.starts_with("Reply to "),
        "the two tokens before the stall were streamed: {:?}",
        ws.events()
    );

    // the conversation goes on after an error reply
    let next = send(&w.url, "c-500", "u", "a normal question").await?;
    let reply = wait_reply(&w.url, "c-500", &next, T).await?;
    assert!(reply["error"].is_null(), "{reply}");

    // a refused connection: the LLM endpoint is a closed port
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let prefix2 = unique_prefix("llmdown");
    let down = Worker::start(failing_worker(
        "down",
        &prefix2,
        &bootstrap,
        &format!("http://127.0.0.1:{closed}/v1"),
    )?)
    .await?;
    let id = send(&down.url, "c-down", "u", "anyone there?").await?;
    let reply = wait_reply(&down.url, "c-down", &id, T).await?;
    assert_eq!(reply["error"]["kind"], "unavailable", "{reply}");
    assert_eq!(reply["error"]["attempts"], 3, "{reply}");
    // chat users get a short reason; the LLM's internal address stays in the worker's log
    let shown = reply["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(shown, "The model could not be reached", "{reply}");
    assert!(
        !reply.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{reply}"
    );

    // ground truth: exactly one reply per user message in both logs
    for (p, expected) in [(&prefix, sent.len() + 1), (&prefix2, 1)] {
        let log = read_topic(&bootstrap, &format!("{p}chat.messages")).await?;
        // tracing is off unless configured: not a byte of trace context on the wire
        assert!(log.iter().all(|r| r.headers.is_empty()), "records with headers");
        let tally = Tally::of(&log);
        let ids: Vec<String> = tally.users.values().flatten().cloned().collect();
        let (replied, lost, duplicated) = tally.outcome(&ids);
        println!(
            "{p}: sent={} replied={replied} errors={} lost={lost} duplicated={duplicated}",
            ids.len(),
            tally.errors
        );
        assert_eq!((ids.len(), replied, lost, duplicated), (expected, expected, 0, 0));
    }
    Ok(())
}

/// A rate-limited LLM's `Retry-After` is honoured: the next attempt waits at least that long
/// (our own backoff here is 50 ms); one asking for longer than the worker waits (30 s) gets an
/// error reply saying when to try again, without further attempts.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_from_the_llm_is_honoured() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("llmretryafter");
    let llm = FakeLlm::start(&[]).await?;
    let w = Worker::start(
        failing_worker("w", &prefix, &bootstrap, &llm.url)?.env("MESHCHAT_LLM_TIMEOUT_SECS", "5"),
    )
    .await?;
    let id = send(
        &w.url,
        "c-429",
        "u",
        "[tag:ra] [fail-once:429] [retry-after:2] hello",
    )
    .await?;
    let reply = wait_reply(&w.url, "c-429", &id, T).await?;
    assert!(
        reply["error"].is_null(),
        "answered on the second attempt: {reply}"
    );
    let stats = llm.stats().await?;
    let at: Vec<u64> = stats["arrivedAtMs"]["ra"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(at.len(), 2, "{stats}");
    let waited = at[1] - at[0];
    println!("second attempt {waited} ms after the 429 (Retry-After: 2, backoff 50 ms)");
    assert!(waited >= 2_000, "the attempt waited out Retry-After: {waited} ms");

    let id = send(
        &w.url,
        "c-busy",
        "u",
        "[tag:busy] [fail:429] [retry-after:120] hello",
    )
    .await?;
    let reply = wait_reply(&w.url, "c-busy", &id, T).await?;
    assert_eq!(reply["error"]["kind"], "upstream", "{reply}");
    assert_eq!(
        reply["error"]["message"], "The model is busy; try again in 120s",
        "{reply}"
    );
    assert_eq!(reply["error"]["attempts"], 1, "{reply}");
    assert_eq!(llm.stats().await?["byTag"]["busy"], 1);
    Ok(())
}
