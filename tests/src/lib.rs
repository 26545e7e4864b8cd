//! Test harness: starts a real Kafka broker (once per run), the fake LLM and worker processes,
//! and gives tests small clients for REST, WebSocket, SSE and the topics themselves.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod image;
pub mod k8s;
mod kafka;
mod live;
mod mesh;
mod otlp;
mod procs;
pub mod python;

pub use kafka::{PrivateBroker, TopicRecord, broker, committed, end_offsets, produce, read_topic};
pub use live::{
    LiveClient, connect_sse, connect_sse_as, connect_sse_from, connect_ws, connect_ws_as, connect_ws_query,
    ws_request,
};
pub use mesh::{BalancerProc, Load, MeshOptions, TestMesh, serial, verify_exactly_once, watch_all};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use procs::{
    FakeLlm, MESH_SECRET, StaticPair, Worker, WorkerSpec, bin, free_ports, start_static, static_pair,
    static_peers, unique_prefix,
};

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Polls `f` every 100 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shared HTTP client.
pub fn http() -> reqwest::Client {
    // Built once: building a client loads and parses the system CA store (tens of ms of CPU),
    // and the load generators call this for every request — per-call clients starved the test
    // runtime until requests sat unsent for their whole timeout. No idle pooling, so no
    // connection outlives the test runtime that opened it.
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default()
    });
    CLIENT.clone()
}

/// The value of the gauge `name` on the worker whose internal listener is `internal_url`
/// (`i64` for counts, `f64` for ratios such as the load factor).
pub async fn gauge<T: std::str::FromStr>(internal_url: &str, name: &str) -> Option<T> {
    let text = http()
        .get(format!("{internal_url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// Conversations `<name>-<n>` of the default tenant, in order, whose partition (of
/// `partitions`) is in `on`: for a test that wants ones a given worker owns.
pub fn conversations_on(
    name: &str,
    partitions: i32,
    on: std::ops::Range<i32>,
) -> impl Iterator<Item = String> {
    let name = name.to_string();
    (0..).map(move |n| format!("{name}-{n}")).filter(move |c| {
        on.contains(&meshchat_wire::partition_for(
            &meshchat_wire::conversation_key("default", c),
            partitions,
        ))
    })
}

/// Sends a chat message as `user` (an admin of the default tenant); returns the message id.
pub async fn send(base: &str, conversation: &str, user: &str, content: &str) -> anyhow::Result<String> {
    send_as(base, &auth::admin(user), conversation, user, content).await
}

/// Sends a chat message with the bearer `token`; returns the message id.
pub async fn send_as(
    base: &str,
    token: &str,
    conversation: &str,
    user: &str,
    content: &str,
) -> anyhow::Result<String> {
    let resp = http()
        .post(format!("{base}/api/chat/send"))
        .bearer_auth(token)
        .json(&json!({"conversationId": conversation, "userId": user, "content": content}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.context("send response is not JSON")?;
    if status != 200 {
        bail!("send answered {status}: {body}");
    }
    body["messageId"]
        .as_str()
        .map(str::to_string)
        .context("no messageId in send response")
}

/// `GET /api/chat/conversation/{id}` as the default tenant's admin: status and body.
pub async fn conversation(base: &str, id: &str) -> anyhow::Result<(u16, Value)> {
    conversation_as(base, &auth::admin("harness"), id).await
}

/// `GET /api/chat/conversation/{id}` with the bearer `token`: status and body.
pub async fn conversation_as(base: &str, token: &str, id: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .get(format!("{base}/api/chat/conversation/{id}"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The reply to `message_id` in a conversation view, if present.
pub fn reply_to<'a>(conv: &'a Value, message_id: &str) -> Option<&'a Value> {
    conv["messages"]
        .as_array()?
        .iter()
        .find(|m| m["inReplyTo"] == message_id)
}

/// Waits until the conversation served by `base` has a reply to `message_id`.
pub async fn wait_reply(
    base: &str,
    conversation_id: &str,
    message_id: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    wait_for(&format!("reply to {message_id}"), timeout, || async {
        let (status, conv) = conversation(base, conversation_id).await.ok()?;
        (status == 200).then_some(())?;
        reply_to(&conv, message_id).cloned()
    })
    .await
}

/// What a `chat.messages` log says about replies: the ground truth tests count against.
#[derive(Debug, Default)]
pub struct Tally {
    /// User message ids per conversation, in log order.
    pub users: std::collections::BTreeMap<String, Vec<String>>,
    /// Answered message ids per conversation, in log order.
    pub reply_order: std::collections::BTreeMap<String, Vec<String>>,
    /// Replies per answered message id.
    pub replies: std::collections::HashMap<String, usize>,
    /// Error replies.
    pub errors: usize,
}

impl Tally {
    /// Counts a log read with [`read_topic`].
    pub fn of(log: &[TopicRecord]) -> Self {
        let mut t = Tally::default();
        for r in log {
            let id = |field: &str| r.value[field].as_str().unwrap_or_default().to_string();
            match r.value["type"].as_str() {
                Some("userMessage") => t.users.entry(r.key.clone()).or_default().push(id("id")),
                Some("agentReply") => {
                    *t.replies.entry(id("inReplyTo")).or_default() += 1;
                    t.reply_order
                        .entry(r.key.clone())
                        .or_default()
                        .push(id("inReplyTo"));
                    t.errors += usize::from(!r.value["error"].is_null());
                }
                _ => {}
            }
        }
        t
    }

    /// User messages in the log.
    pub fn sent(&self) -> usize {
        self.users.values().map(Vec::len).sum()
    }

    /// `(replied exactly once, lost, duplicated)` over `ids`.
    pub fn outcome(&self, ids: &[String]) -> (usize, usize, usize) {
        let once = ids.iter().filter(|id| self.replies.get(*id) == Some(&1)).count();
        let lost = ids.iter().filter(|id| !self.replies.contains_key(*id)).count();
        let dup = ids
            .iter()
            .filter(|id| self.replies.get(*id).is_some_and(|n| *n > 1))
            .count();
        (once, lost, dup)
    }
}
