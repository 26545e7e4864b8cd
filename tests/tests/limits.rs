//! Inputs that used to stop a worker from committing or answering: a long conversation of
//! large messages (its snapshot outgrew the broker's record limit), a reply larger than a record
//! may be. Real workers, a real broker; counted outcomes.

use std::time::Duration;

use meshchat_tests::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread")]
async fn large_conversations_and_replies_never_stop_answering_or_committing() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = TestMesh::start(
        "limits",
        MeshOptions {
            partitions: PARTITIONS,
            token_ms: 0,
            ..Default::default()
        },
    )
    .await?;
    let urls: Vec<String> = mesh.workers.iter().map(|w| w.url.clone()).collect();
    let url = |i: usize| urls[i % urls.len()].clone();
    let mut sent = Vec::new();

    // 48 messages of 30 KiB (under the 32 KiB content limit), each echoed by a reply as large:
    // ~3 MB of history in one conversation, three times the broker's record limit
    let long = "long-talk";
    for i in 0..48 {
        let content = format!("{i:02} {}", "x".repeat(30 * 1024 - 4));
        let id = send(&url(i), long, "ann", &content).await?;
        let reply = wait_reply(&url(i), long, &id, T).await?;
        assert!(reply["error"].is_null(), "{reply}");
        sent.push(id);
    }

    // a reply larger than a record may be: an error reply saying so, and the conversation goes on
    let huge = "huge-reply";
    let id = send(&url(0), huge, "bob", "[big:1200000] tell me everything").await?;
    let reply = wait_reply(&url(0), huge, &id, T).await?;
    assert_eq!(reply["error"]["kind"], "notStored", "{reply}");
    assert_eq!(reply["error"]["message"], "The answer was too large to store");
    sent.push(id);
    let id = send(&url(1), huge, "bob", "a short question now").await?;
    let reply = wait_reply(&url(1), huge, &id, T).await?;
    assert!(reply["error"].is_null(), "{reply}");
    sent.push(id);

    // 24 ordinary conversations across all workers are answered
    let mut ordinary = Vec::new();
    for i in 0..24 {
        let conv = format!("plain-{i}");
        ordinary.push((conv.clone(), send(&url(i), &conv, "cid", "hello").await?));
    }
    for (i, (conv, id)) in ordinary.iter().enumerate() {
        wait_reply(&url(i + 1), conv, id, T).await?;
        sent.push(id.clone());
    }

    // the owners' commits pass the large messages in every partition
    let messages = format!("{}chat.messages", mesh.prefix);
    let group = format!("{}meshchat-owners", mesh.prefix);
    let log = read_topic(&mesh.bootstrap, &messages).await?;
    for p in 0..PARTITIONS {
        let Some(last) = log.iter().filter(|r| r.partition == p).map(|r| r.offset).max() else {
            continue;
        };
        wait_for(
            &format!("partition {p}'s commit past offset {last}"),
            T,
            || async {
                let (offset, _) = committed(&mesh.bootstrap, &group, &messages, p).await.ok()??;
                (offset > last).then_some(())
            },
        )
        .await?;
    }

    // the long conversation's owner drains: its release writes a snapshot and commits (it used
    // to fail on the same error and wait for the drain's timeout)
    let p = meshchat_wire::partition_for(long, PARTITIONS);
    let mut owner = None;
    for i in 0..mesh.workers.len() {
        if mesh.owned(i).await.is_some_and(|o| o.contains(&i64::from(p))) {
            owner = Some(i);
        }
    }
    let owner = owner.ok_or_else(|| anyhow::anyhow!("nobody owns partition {p}"))?;
    let status = mesh.workers[owner].stop().await?;
    assert!(status.success(), "clean exit: {status}");
    let owner_log = std::fs::read_to_string(&mesh.workers[owner].log)?;
    assert!(
        owner_log.contains("owner loop drained: snapshots written, offsets committed"),
        "the drain's final commit was written"
    );
    assert!(
        !owner_log.contains("snapshot round failed"),
        "no snapshot round failed"
    );
    assert!(
        !owner_log.contains("release could not snapshot"),
        "every release was written"
    );
    let other = (owner + 1) % mesh.workers.len();
    let id = send(
        &mesh.workers[other].url,
        long,
        "ann",
        "still there after the move?",
    )
    .await?;
    let reply = wait_reply(&mesh.workers[other].url, long, &id, T).await?;
    assert!(reply["error"].is_null(), "{reply}");
    sent.push(id);

    // ground truth: every message answered once
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = Tally::of(&read_topic(&mesh.bootstrap, &messages).await?);
    let (replied, lost, duplicated) = tally.outcome(&sent);
    println!(
        "sent={} replied={replied} errors={} lost={lost} duplicated={duplicated}",
        sent.len(),
        tally.errors
    );
    assert_eq!(
        (tally.sent(), replied, lost, duplicated, tally.errors),
        (sent.len(), sent.len(), 0, 0, 1)
    );
    Ok(())
}

/// A send with an `Idempotency-Key`, as a client retrying it would.
async fn send_keyed(
    base: &str,
    key: &str,
    conversation: &str,
    content: &str,
) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .post(format!("{base}/api/chat/send"))
        .bearer_auth(auth::admin("ann"))
        .header("Idempotency-Key", key)
        .json(&json!({"conversationId": conversation, "content": content}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// How often the fake LLM was asked about `[tag:<tag>]`.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_send_with_an_idempotency_key_stores_one_message() -> anyhow::Result<()> {
    let _serial = serial().await;
    // a broker of this test's own: it is frozen below
    let broker = PrivateBroker::start().await?;
    let prefix = unique_prefix("idem");
    let llm = FakeLlm::start(&[]).await?;
    let spec =
        WorkerSpec::new("owner", &prefix, &broker.bootstrap, &llm.url)?.env("MESHCHAT_PARTITIONS", "4");
    let peers = format!("owner={}|all", spec.internal_url());
    let mut owner = Worker::start(spec).await?;
    let front = Worker::start(
        WorkerSpec::new("front", &prefix, &broker.bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_OWNED_PARTITIONS", "none")
            .env("MESHCHAT_PEERS", peers),
    )
    .await?;
    let conv = "orders";

    // the same key through both workers, and again after the owner crashed and came back
    let (status, first) = send_keyed(&owner.url, "order-1", conv, "[tag:once] place my order").await?;
    assert_eq!(status, 200, "{first}");
    let id = first["messageId"].as_str().unwrap_or_default().to_string();
    wait_reply(&owner.url, conv, &id, T).await?;
    let (status, again) = send_keyed(&front.url, "order-1", conv, "[tag:once] place my order").await?;
    assert_eq!((status, &again["messageId"]), (200, &first["messageId"]));
    owner.kill().await?;
    owner.restart().await?;
    for url in [&front.url, &owner.url] {
        let (status, again) = send_keyed(url, "order-1", conv, "[tag:once] place my order").await?;
        assert_eq!((status, &again["messageId"]), (200, &first["messageId"]));
    }

    // the restarted owner holds its partitions again and answers
    let warm = send(&owner.url, "warm-up", "ann", "are you back?").await?;
    wait_reply(&owner.url, "warm-up", &warm, T).await?;

    // a send stuck on a frozen broker: 503 (after the send's timeout, or at once once the
    // worker noticed), its record still queued; the client retries with the same key later
    broker.pause()?;
    let (status, stuck) = send_keyed(&front.url, "order-2", conv, "[tag:twice] and a second one").await?;
    assert_eq!(status, 503, "{stuck}");
    // known unreachable now: a send is refused at once, nothing queued
    let refused_at = std::time::Instant::now();
    let (status, body) = send_keyed(&front.url, "order-3", conv, "[tag:never] not now").await?;
    let waited = refused_at.elapsed();
    assert_eq!(status, 503, "{body}");
    println!("a send while Kafka is known unreachable answered 503 in {waited:?}");
    assert!(
        waited < Duration::from_secs(10),
        "refused without waiting for the send's 15 s timeout: {waited:?}"
    );
    broker.resume()?;
    // no restarts: a producer that came out of the freeze unable to deliver (librdkafka can
    // keep a partition leaderless after one) is replaced once a record times out (30 s)
    let resumed = std::time::Instant::now();
    let (status, retried) = wait_for("the retry to be accepted", 2 * T, || async {
        let r = send_keyed(&front.url, "order-2", conv, "[tag:twice] and a second one")
            .await
            .ok()?;
        (r.0 == 200).then_some(r)
    })
    .await?;
    assert_eq!(status, 200);
    let id2 = retried["messageId"].as_str().unwrap_or_default().to_string();
    println!(
        "the retry was accepted {:?} after the broker resumed",
        resumed.elapsed()
    );
    wait_reply(&owner.url, conv, &id2, 2 * T).await?;
    println!(
        "the retried message was answered {:?} after the broker resumed",
        resumed.elapsed()
    );

    // settle: the stuck send's record, if the producer still delivers it, lands by now
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, view) = conversation(&owner.url, conv).await?;
    let messages = view["messages"].as_array().cloned().unwrap_or_default();
    let users: Vec<&Value> = messages.iter().filter(|m| m["inReplyTo"].is_null()).collect();
    let replies = messages.iter().filter(|m| !m["inReplyTo"].is_null()).count();
    println!(
        "user messages shown={} replies={replies} llm calls: once={} twice={} never={}",
        users.len(),
        llm.calls("once").await?,
        llm.calls("twice").await?,
        llm.calls("never").await?
    );
    assert_eq!(users.len(), 2, "one message per key: {view}");
    assert_eq!(replies, 2, "{view}");
    assert_eq!(llm.calls("once").await?, 1);
    assert_eq!(llm.calls("twice").await?, 1);
    assert_eq!(llm.calls("never").await?, 0);
    let log = read_topic(&broker.bootstrap, &format!("{prefix}chat.messages")).await?;
    let tally = Tally::of(&log);
    let (replied, lost, duplicated) = tally.outcome(&[id.clone(), id2.clone()]);
    assert_eq!((replied, lost, duplicated), (2, 0, 0));
    let never = log
        .iter()
        .filter(|r| {
            r.value["content"]
                .as_str()
                .is_some_and(|c| c.contains("[tag:never]"))
        })
        .count();
    assert_eq!(never, 0, "a send refused at once queues nothing");
    drop(front);
    drop(owner);
    Ok(())
}

/// `POST /api/chat/send` with `token`: status, body and the `Retry-After` header.
async fn send_raw(
    base: &str,
    token: &str,
    conversation: &str,
    content: &str,
) -> anyhow::Result<(u16, Value, Option<u64>)> {
    let resp = http()
        .post(format!("{base}/api/chat/send"))
        .bearer_auth(token)
        .json(&json!({"conversationId": conversation, "content": content}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((status, resp.json().await.unwrap_or(Value::Null), retry))
}

/// The worker's `meshchat_live_streams` gauge.
async fn live_streams(w: &Worker) -> Option<i64> {
    gauge(&w.internal_url, "meshchat_live_streams").await
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_oversized_frames_and_silent_sockets_are_refused_and_the_worker_keeps_serving()
-> anyhow::Result<()> {
    let _serial = serial().await;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("flood");
    let llm = FakeLlm::start(&[]).await?;
    // the documented defaults for messages; a small token quota and short waits so the test
    // sees them bite
    let w = Worker::start(
        WorkerSpec::new("w", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_USER_MESSAGES_PER_MINUTE", "120")
            .env("MESHCHAT_USER_MESSAGE_BURST", "100")
            .env("MESHCHAT_TENANT_MESSAGES_PER_MINUTE", "1200")
            .env("MESHCHAT_TENANT_MESSAGE_BURST", "1000")
            .env("MESHCHAT_USER_STREAMS", "3")
            .env("MESHCHAT_TENANT_LLM_TOKENS_PER_MINUTE", "3000")
            .env("MESHCHAT_QUOTA_WAIT_SECS", "1")
            .env("MESHCHAT_WS_PING_SECS", "1"),
    )
    .await?;

    // acme's user floods: 150 messages at once over 10 conversations; globex chats meanwhile
    let flooder = auth::jwt("acme", "mallory", "user");
    let calm = auth::jwt("globex", "gina", "user");
    let flood = futures::future::join_all((0..150).map(|i| {
        let (url, token) = (w.url.clone(), flooder.clone());
        async move { send_raw(&url, &token, &format!("f-{}", i % 10), &format!("flood {i}")).await }
    }));
    let steady = async {
        let mut out = Vec::new();
        for i in 0..10 {
            out.push(send_raw(&w.url, &calm, &format!("g-{i}"), "a calm question").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out
    };
    let (flood, steady) = tokio::join!(flood, steady);
    let mut accepted = Vec::new();
    let mut limited = 0;
    for (i, r) in flood.into_iter().enumerate() {
        let (status, body, retry) = r?;
        match status {
            200 => accepted.push((
                format!("f-{}", i % 10),
                body["messageId"].as_str().unwrap_or_default().to_string(),
            )),
            429 => {
                limited += 1;
                assert_eq!(body["error"], "rate_limited", "{body}");
                assert!(retry.is_some_and(|s| s >= 1), "429 carries Retry-After: {body}");
            }
            other => panic!("flood answered {other}: {body}"),
        }
    }
    println!("flood: accepted={} limited={limited}", accepted.len());
    assert_eq!(accepted.len() + limited, 150);
    assert!(
        (100..=102).contains(&accepted.len()),
        "the burst, then the rate: {}",
        accepted.len()
    );
    let mut calm_ids = Vec::new();
    for (i, r) in steady.into_iter().enumerate() {
        let (status, body, _) = r?;
        assert_eq!(status, 200, "the other tenant is not limited: {body}");
        calm_ids.push((
            format!("g-{i}"),
            body["messageId"].as_str().unwrap_or_default().to_string(),
        ));
    }

    // every accepted message is answered once: some of acme's with an error reply saying its
    // token quota is used up, none of globex's
    let as_admin = |tenant: &str| auth::jwt(tenant, "boss", "admin");
    let mut quota_errors = 0;
    for (tenant, ids) in [("acme", &accepted), ("globex", &calm_ids)] {
        let token = as_admin(tenant);
        for (conv, id) in ids.iter() {
            let reply = wait_for(&format!("reply to {id}"), Duration::from_secs(120), || async {
                let (status, view) = conversation_as(&w.url, &token, conv).await.ok()?;
                (status == 200).then_some(())?;
                reply_to(&view, id).cloned()
            })
            .await?;
            match (tenant, reply["error"]["kind"].as_str()) {
                (_, None) => {}
                ("acme", Some("quota")) => {
                    quota_errors += 1;
                    assert!(
                        reply["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("token quota")),
                        "{reply}"
                    );
                }
                _ => panic!("unexpected error reply: {reply}"),
            }
        }
    }
    println!("acme replies that were quota errors: {quota_errors}");
    assert!(quota_errors > 0, "the token quota bit");

    // a user's live streams are capped
    let reader = auth::jwt("acme", "rita", "user");
    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(connect_ws_as(&w.url, &format!("conversationId=r-{i}"), Some(&reader)).await?);
    }
    let over = connect_ws_as(&w.url, "conversationId=r-3", Some(&reader)).await;
    assert!(over.is_err(), "a fourth stream of one user is refused");
    let resp = http()
        .get(format!("{}/api/chat/conversation/r-4/events", w.url))
        .bearer_auth(&reader)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 429, "SSE counts too");
    drop(streams);

    // a 2 MiB WebSocket message closes that socket; the worker goes on serving
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let request = ws_request(&w.url, "conversationId=big", Some(&auth::admin("ann")))?;
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    // the worker may close (or reset) the socket while the message is still being written
    let sent = socket
        .send(Message::Binary(vec![7u8; 2 * 1024 * 1024].into()))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        if sent.is_err() {
            return;
        }
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized message closed the socket");
    let ws = connect_ws(&w.url, "after-big").await?;
    let id = send(&w.url, "after-big", "ann", "still serving?").await?;
    wait_reply(&w.url, "after-big", &id, T).await?;
    ws.wait("the reply on a new socket", T, |e| e["type"] == "reply")
        .await?;
    drop(ws);

    // a client that completed the handshake and then went silent (a half-open socket) is
    // closed after two unanswered pings
    wait_for("no stream left open", T, || async {
        (live_streams(&w).await? == 0).then_some(())
    })
    .await?;
    let silent = silent_websocket(&w.url, "quiet").await?;
    wait_for("the silent socket counted", T, || async {
        (live_streams(&w).await? == 1).then_some(())
    })
    .await?;
    let closed_at = std::time::Instant::now();
    wait_for("the silent socket closed", T, || async {
        (live_streams(&w).await? == 0).then_some(())
    })
    .await?;
    println!(
        "a silent WebSocket was closed {:?} after it was counted (pings every 1 s)",
        closed_at.elapsed()
    );
    drop(silent);
    Ok(())
}

/// A WebSocket handshake done by hand; the socket is then never read, so the worker's pings go
/// unanswered.
async fn silent_websocket(base: &str, conversation: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /api/chat/ws?conversationId={conversation} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        auth::admin("quiet")
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            anyhow::bail!("closed during the handshake");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "handshake refused: {head}");
    Ok(tcp)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_past_its_pending_or_participant_cap_gets_error_replies_at_once() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("caps");
    let llm = FakeLlm::start(&[]).await?;
    let w = Worker::start(
        WorkerSpec::new("w", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_MAX_PENDING_PER_CONVERSATION", "3")
            .env("MESHCHAT_MAX_PARTICIPANTS_PER_CONVERSATION", "2"),
    )
    .await?;
    // 8 messages at once while the first answer streams slowly: 3 wait their turn, 5 are
    // refused an answer and get their error reply without waiting for the slow one
    let conv = "busy";
    let mut ids = Vec::new();
    ids.push(send(&w.url, conv, "ann", "[slow:300] first, slowly").await?);
    for i in 1..8 {
        ids.push(send(&w.url, conv, "ann", &format!("then {i}")).await?);
    }
    let last = wait_reply(&w.url, conv, &ids[7], T).await?;
    assert_eq!(last["error"]["kind"], "limit", "{last}");
    let (_, view) = conversation(&w.url, conv).await?;
    assert!(
        reply_to(&view, &ids[0]).is_none(),
        "the refusal came before the slow answer: {view}"
    );
    let mut kinds = Vec::new();
    for id in &ids {
        let r = wait_reply(&w.url, conv, id, T).await?;
        kinds.push(r["error"]["kind"].as_str().unwrap_or("ok").to_string());
    }
    println!("replies: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "ok").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "limit").count(), 5, "{kinds:?}");
    // the conversation goes on
    let next = send(&w.url, conv, "ann", "and now?").await?;
    assert!(wait_reply(&w.url, conv, &next, T).await?["error"].is_null());
    ids.push(next);

    // a third participant is refused an answer and not made a participant
    let small = "small-room";
    ids.push(send(&w.url, small, "ann", "hi").await?);
    ids.push(send(&w.url, small, "bob", "hi").await?);
    let third = send(&w.url, small, "cid", "me too?").await?;
    let r = wait_reply(&w.url, small, &third, T).await?;
    assert_eq!(r["error"]["kind"], "limit", "{r}");
    ids.push(third);
    let (_, view) = conversation(&w.url, small).await?;
    assert_eq!(
        view["participants"],
        json!(["ann", "bob", "meshchat-agent"]),
        "{view}"
    );

    // ground truth: one reply each
    let tally = Tally::of(&read_topic(&bootstrap, &format!("{prefix}chat.messages")).await?);
    let (replied, lost, duplicated) = tally.outcome(&ids);
    assert_eq!((replied, lost, duplicated), (ids.len(), 0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_conversations_leave_memory_and_come_back_whole() -> anyhow::Result<()> {
    let _serial = serial().await;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("evict");
    let llm = FakeLlm::start(&[]).await?;
    let spec = WorkerSpec::new("w", &prefix, &bootstrap, &llm.url)?
        .env("MESHCHAT_PARTITIONS", "4")
        .env("MESHCHAT_IDLE_EVICT_SECS", "2")
        .env("MESHCHAT_MAX_RESIDENT_CONVERSATIONS", "10");
    let mut w = Worker::start(spec).await?;
    // 30 conversations of a user of acme, each with an exchange and a keyed message
    let ann = auth::jwt("acme", "ann", "user");
    let mut keyed = Vec::new();
    for i in 0..30 {
        let conv = format!("talk-{i}");
        send_as(&w.url, &ann, &conv, "ann", &format!("first {i}")).await?;
        let resp = http()
            .post(format!("{}/api/chat/send", w.url))
            .bearer_auth(&ann)
            .header("Idempotency-Key", format!("k-{i}"))
            .json(&json!({"conversationId": conv, "content": format!("keyed {i}")}))
            .send()
            .await?;
        let body: Value = resp.json().await?;
        keyed.push(body["messageId"].as_str().unwrap_or_default().to_string());
    }
    let admin = auth::jwt("acme", "boss", "admin");
    for (i, id) in keyed.iter().enumerate() {
        let conv = format!("talk-{i}");
        wait_for(&format!("reply to {id}"), T, || async {
            let (status, view) = conversation_as(&w.url, &admin, &conv).await.ok()?;
            (status == 200).then_some(())?;
            reply_to(&view, id).cloned()
        })
        .await?;
    }
    // idle for 2 s: they leave memory (after their snapshot round)
    let st = wait_for("idle conversations evicted", T, || async {
        let st = w.status().await.ok()?;
        (st["evictedConversations"].as_u64()? >= 25).then_some(st)
    })
    .await?;
    println!(
        "held {} in memory, {} evicted",
        st["residentConversations"], st["evictedConversations"]
    );
    assert!(st["residentConversations"].as_u64().unwrap_or(99) <= 10, "{st}");

    // they come back whole: a member reads one (its whole history), a stranger gets 404
    let (status_code, view) = conversation_as(&w.url, &ann, "talk-3").await?;
    assert_eq!(status_code, 200, "{view}");
    assert_eq!(view["messages"].as_array().map(Vec::len), Some(4), "{view}");
    let (status_code, _) = conversation_as(&w.url, &auth::jwt("acme", "eve", "user"), "talk-4").await?;
    assert_eq!(status_code, 404, "not a participant, even while evicted");
    // the next message is answered with the history as context (the fake LLM counts turns)
    let next = send_as(&w.url, &ann, "talk-5", "ann", "and a third").await?;
    let r = wait_for("the reply", T, || async {
        let (_, view) = conversation_as(&w.url, &admin, "talk-5").await.ok()?;
        reply_to(&view, &next).cloned()
    })
    .await?;
    assert!(
        r["content"].as_str().is_some_and(|c| c.contains("turn 3")),
        "the context held the earlier turns: {r}"
    );
    // an idempotency key used before the eviction is still known
    let resp = http()
        .post(format!("{}/api/chat/send", w.url))
        .bearer_auth(&ann)
        .header("Idempotency-Key", "k-6")
        .json(&json!({"conversationId": "talk-6", "content": "keyed 6"}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    assert_eq!(body["messageId"], keyed[6].as_str());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, view) = conversation_as(&w.url, &admin, "talk-6").await?;
    assert_eq!(
        view["messages"].as_array().map(Vec::len),
        Some(4),
        "stored once: {view}"
    );

    // a restart takes the partitions over with the idle ones only indexed, and serves them
    w.stop().await?;
    w.restart().await?;
    let st = w.status().await?;
    println!(
        "after a restart: held {}, evicted {}",
        st["residentConversations"], st["evictedConversations"]
    );
    let (status_code, view) = conversation_as(&w.url, &ann, "talk-7").await?;
    assert_eq!(status_code, 200, "{view}");
    assert_eq!(view["messages"].as_array().map(Vec::len), Some(4), "{view}");
    Ok(())
}
