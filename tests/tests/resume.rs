//! Resuming a live stream on another worker from the last event id, mid-reply: after the
//! client dropped its connection, after the worker it watched through was SIGKILLed (the
//! conversation's owner: the reply starts again elsewhere), and after the conversation's
//! partition moved. What the two connections received together must be the reply's events
//! with no id twice, no token missing and the final text equal to the tokens of its last
//! attempt. Real workers, balancer and broker; SSE (`Last-Event-ID`) and WebSocket (`?after=`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use meshchat_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A reply of ~20 tokens, 150 ms each.
const SLOW: &str = "[slow:150] please tell me a long story about logs, cursors and resuming streams";

/// How a client comes back.
#[derive(Clone, Copy, Debug)]
enum Via {
    Sse,
    WebSocket,
}

async fn watch(via: Via, base: &str, conv: &str, after: Option<&str>) -> anyhow::Result<LiveClient> {
    match via {
        Via::Sse => connect_sse_from(base, conv, Some(&auth::admin("harness")), after).await,
        Via::WebSocket => {
            let query = match after {
                Some(id) => format!("conversationId={conv}&after={id}"),
                None => format!("conversationId={conv}"),
            };
            connect_ws_query(base, &query).await
        }
    }
}

/// Tokens of the reply to `message` received so far.
fn tokens_of(events: &[Value], message: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == "token" && e["inReplyTo"] == message)
        .count()
}

/// Checks what `first` then `second` received for the reply to `message`; returns the number
/// of tokens each got.
fn check(first: &[Value], second: &[Value], message: &str) -> (usize, usize) {
    let all: Vec<&Value> = first.iter().chain(second).collect();
    // ids: every event has one, none twice, each connection's growing
    let mut ids = HashSet::new();
    for e in &all {
        let id = e["id"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "an event without an id: {e}");
        assert!(ids.insert(id.to_string()), "id {id} twice: {e}");
    }
    let ours: Vec<&&Value> = all
        .iter()
        .filter(|e| {
            e["inReplyTo"] == message || e["message"]["inReplyTo"] == message || e["message"]["id"] == message
        })
        .collect();
    let messages = ours.iter().filter(|e| e["type"] == "message").count();
    let replies: Vec<&&&Value> = ours.iter().filter(|e| e["type"] == "reply").collect();
    assert_eq!(messages, 1, "the message once: {ours:#?}");
    assert_eq!(replies.len(), 1, "the reply once: {ours:#?}");
    let reply = &replies[0]["message"];
    // tokens per generation (owner epoch, LLM attempt: a move, failover or retry starts the
    // text again): no seq twice, none missing from 0; the last generation's make the text
    let mut attempts: BTreeMap<(u64, u64), Vec<(u64, String)>> = BTreeMap::new();
    for e in ours.iter().filter(|e| e["type"] == "token") {
        let generation = (
            e["epoch"].as_u64().unwrap_or(0),
            e["attempt"].as_u64().unwrap_or(0),
        );
        attempts.entry(generation).or_default().push((
            e["seq"].as_u64().unwrap_or(0),
            e["delta"].as_str().unwrap_or_default().to_string(),
        ));
    }
    for (generation, tokens) in &attempts {
        let seqs: Vec<u64> = tokens.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "generation {generation:?}: {seqs:?}"
        );
    }
    let text: String = attempts
        .values()
        .next_back()
        .map(|t| t.iter().map(|(_, d)| d.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        Some(text.as_str()),
        reply["content"].as_str(),
        "the tokens make the reply"
    );
    println!(
        "generations of the reply's tokens: {:?}",
        attempts.keys().collect::<Vec<_>>()
    );
    (tokens_of(first, message), tokens_of(second, message))
}

/// The id of the last of `events`.
fn last_id(events: &[Value]) -> String {
    events
        .last()
        .and_then(|e| e["id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A conversation whose partition worker `i` of `mesh` holds.
async fn owned_by(mesh: &TestMesh, i: usize, name: &str) -> (String, i64) {
    let held = mesh.owned(i).await.unwrap_or_default();
    (0..1000)
        .map(|n| format!("{name}-{n}"))
        .find_map(|c| {
            let p = i64::from(meshchat_wire::partition_for(
                &meshchat_wire::conversation_key("default", &c),
                PARTITIONS,
            ));
            held.contains(&p).then_some((c, p))
        })
        .unwrap_or_default()
}

/// Ground truth: `message` answered exactly once in the log.
async fn answered_once(mesh: &TestMesh, message: String) -> anyhow::Result<()> {
    let log = read_topic(&mesh.bootstrap, &format!("{}chat.messages", mesh.prefix)).await?;
    assert_eq!(Tally::of(&log).outcome(&[message]), (1, 0, 0));
    Ok(())
}

/// Moves partition `p` to worker `to` through the API and waits until it holds it.
async fn move_partition(mesh: &TestMesh, p: i64, to: usize) -> anyhow::Result<()> {
    let moved = http()
        .post(format!("{}/api/agent/migrate", mesh.workers[0].url))
        .bearer_auth(auth::operator())
        .json(&serde_json::json!({"targetNode": format!("node-{to}"), "partitions": [p]}))
        .send()
        .await?;
    assert_eq!(moved.status(), 200);
    wait_for("the move", T, || async {
        mesh.owned(to).await.filter(|o| o.contains(&p)).map(|_| ())
    })
    .await
}

const PARTITIONS: i32 = 6;

async fn mesh(name: &str) -> anyhow::Result<TestMesh> {
    TestMesh::start(
        name,
        MeshOptions {
            workers: 3,
            partitions: PARTITIONS,
            ..Default::default()
        },
    )
    .await
}

/// The client watches through worker `watch_at`, sees a few tokens, loses its connection
/// (`disrupt`), and comes back on worker `resume_at` from its last id.
async fn resume_mid_reply(
    mesh: &mut TestMesh,
    via: Via,
    conv: &str,
    watch_at: usize,
    resume_at: usize,
    disrupt: impl AsyncFnOnce(&mut TestMesh, LiveClient) -> anyhow::Result<Vec<Value>>,
) -> anyhow::Result<()> {
    let base = mesh.workers[watch_at].url.clone();
    let first = watch(via, &base, conv, None).await?;
    let sent_to = mesh.workers[resume_at].url.clone();
    let message = send(&sent_to, conv, "ann", SLOW).await?;
    first
        .wait("three tokens", T, |_| tokens_of(&first.events(), &message) >= 3)
        .await?;
    // the client comes back from the last event it got before its connection went (events
    // may still arrive while it is being cut)
    let seen = disrupt(mesh, first).await?;
    let last = last_id(&seen);
    let base = mesh.workers[resume_at].url.clone();
    let second = watch(via, &base, conv, Some(&last)).await?;
    second
        .wait("the reply", T, |e| {
            e["type"] == "reply" && e["message"]["inReplyTo"] == message
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything repeated would show now
    let got = second.events();
    let (before, after) = check(&seen, &got, &message);
    println!("{via:?}: {before} tokens before, {after} after resuming at {last}; ids unique, text whole");
    assert!(after > 0, "tokens streamed after the resume");
    answered_once(mesh, message).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_client_resumes_on_another_worker_mid_reply() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = mesh("resume-drop").await?;
    for via in [Via::Sse, Via::WebSocket] {
        let (conv, _) = owned_by(&mesh, 0, &format!("drop-{via:?}")).await;
        // watched through the owner, resumed through another worker
        resume_mid_reply(&mut mesh, via, &conv, 0, 1, async |_, client| {
            let seen = client.events();
            drop(client);
            tokio::time::sleep(Duration::from_millis(600)).await; // tokens go on meanwhile
            Ok(seen)
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_after_its_worker_and_the_owner_was_killed_mid_reply() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = mesh("resume-kill").await?;
    let (conv, _) = owned_by(&mesh, 0, "killed").await;
    resume_mid_reply(&mut mesh, Via::Sse, &conv, 0, 1, async |mesh, client| {
        mesh.workers[0].kill().await?;
        let seen = client.events();
        drop(client);
        Ok(seen)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_after_the_partition_moved_mid_reply() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = mesh("resume-move").await?;
    let (conv, p) = owned_by(&mesh, 0, "moved").await;
    resume_mid_reply(&mut mesh, Via::WebSocket, &conv, 0, 2, async |mesh, client| {
        move_partition(mesh, p, 1).await?;
        let seen = client.events();
        drop(client);
        Ok(seen)
    })
    .await?;
    Ok(())
}

/// The client watches through a worker that does not own the conversation (its events are
/// relayed by the owner) and keeps its one connection while `disrupt` takes the owner away
/// mid-reply: its worker goes on from the client's last event wherever the conversation is
/// served then, so the same stream carries the whole reply, no id twice.
async fn relayed_through_a_disruption(
    mesh: &mut TestMesh,
    conv: &str,
    watch_at: usize,
    disrupt: impl AsyncFnOnce(&mut TestMesh) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let base = mesh.workers[watch_at].url.clone();
    let client = watch(Via::Sse, &base, conv, None).await?;
    let message = send(&base, conv, "ann", SLOW).await?;
    client
        .wait("three tokens", T, |_| tokens_of(&client.events(), &message) >= 3)
        .await?;
    disrupt(mesh).await?;
    client
        .wait("the reply on the same stream", T, |e| {
            e["type"] == "reply" && e["message"]["inReplyTo"] == message
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tokens, _) = check(&client.events(), &[], &message);
    println!("one stream: {tokens} tokens, ids unique, text whole");
    answered_once(mesh, message).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_stream_goes_on_when_the_owner_is_killed_mid_reply() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = mesh("relay-kill").await?;
    let (conv, _) = owned_by(&mesh, 0, "relay-killed").await;
    relayed_through_a_disruption(&mut mesh, &conv, 1, async |mesh| mesh.workers[0].kill().await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_stream_follows_its_conversation_when_the_partition_moves_mid_reply() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let mut mesh = mesh("relay-move").await?;
    let (conv, p) = owned_by(&mesh, 0, "relay-moved").await;
    relayed_through_a_disruption(&mut mesh, &conv, 2, async |mesh| move_partition(mesh, p, 1).await).await
}
