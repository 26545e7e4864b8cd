//! The chat path end to end: `POST /api/chat/send` → the reply visible on a WebSocket opened
//! before the load, under an open-loop generator (sends leave on schedule whatever the replies
//! do, and latency counts from the *scheduled* time, so no coordinated omission). Rates step up
//! until the mesh stops keeping up; then the latency at 50 % and 90 % of the highest rate it kept
//! up with. Also worker memory: RSS idle and after many resident conversations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Percentiles, percentiles};
use crate::TestMesh;

/// One step of offered load.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Offered messages/s.
    pub rate: f64,
    /// Sends accepted by the workers.
    pub sent: usize,
    /// Replies seen on the WebSockets within the grace after the step.
    pub replied: usize,
    /// Replies per second of the step.
    pub replied_per_s: f64,
    /// Send (scheduled) → reply on the WebSocket.
    pub latency_ms: Percentiles,
    /// The mesh kept up: ≥ 99 % replied and p99 under the bound.
    pub kept_up: bool,
}

/// What the chat phase measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChatReport {
    /// Workers in the mesh.
    pub workers: usize,
    /// Conversations the load spreads over (one WebSocket each).
    pub conversations: usize,
    /// Fake LLM delay per token.
    pub token_ms: u64,
    /// The rate steps, lowest first.
    pub steps: Vec<Step>,
    /// Highest offered rate the mesh kept up with.
    pub max_sustained: f64,
    /// At half of it.
    pub at_half: Option<Step>,
    /// At 90 % of it.
    pub at_90: Option<Step>,
}

/// Worker memory.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    /// RSS of each worker before any conversation (MiB).
    pub idle_mb: Vec<f64>,
    /// Conversations made resident (one message and its reply each).
    pub conversations: usize,
    /// RSS of each worker after (MiB).
    pub loaded_mb: Vec<f64>,
    /// (sum of RSS growth) / conversations.
    pub bytes_per_conversation: f64,
}

/// Kept up = at least this share of the step's messages answered within the grace...
const KEPT_UP_SHARE: f64 = 0.99;
/// ...and p99 below this.
const KEPT_UP_P99_MS: f64 = 2_000.0;

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Opens one WebSocket per conversation (spread over the workers) recording when each reply
/// arrives, by the message it answers.
async fn watch(mesh: &TestMesh, conversations: &[String], seen: &Seen) -> anyhow::Result<JoinSet<()>> {
    let mut set = JoinSet::new();
    for (i, c) in conversations.iter().enumerate() {
        let base = &mesh.workers[i % mesh.workers.len()].url;
        let url = format!(
            "{}/api/chat/ws?conversationId={c}",
            base.replacen("http://", "ws://", 1)
        );
        let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
        let seen = seen.clone();
        set.spawn(async move {
            let (_, mut read) = socket.split();
            while let Some(Ok(msg)) = read.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
                    && t.contains("\"reply\"")
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && v["type"] == "reply"
                    && let Some(id) = v["message"]["inReplyTo"].as_str()
                    && let Ok(mut s) = seen.lock()
                {
                    s.entry(id.to_string()).or_insert_with(Instant::now);
                }
            }
        });
    }
    Ok(set)
}

/// Offers `rate` messages/s for `secs`, then waits up to `grace` for the replies.
async fn step(
    client: &reqwest::Client,
    urls: &[String],
    conversations: &[String],
    seen: &Seen,
    rate: f64,
    secs: f64,
    grace: Duration,
) -> Step {
    let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let began = Instant::now();
    let n = (rate * secs).round().max(1.0) as usize;
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let scheduled = began + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, sent) = (client.clone(), sent.clone());
        let url = format!("{}/api/chat/send", urls[i % urls.len()]);
        let conv = conversations[i % conversations.len()].clone();
        tasks.spawn(async move {
            let body = json!({"conversationId": conv, "userId": "bench", "content": format!("message {i}")});
            if let Ok(r) = client.post(&url).json(&body).send().await
                && let Ok(v) = r.json::<Value>().await
                && let Some(id) = v["messageId"].as_str()
                && let Ok(mut s) = sent.lock()
            {
                s.push((id.to_string(), scheduled));
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let deadline = Instant::now() + grace;
    loop {
        let replied = seen
            .lock()
            .map(|s| sent.iter().filter(|(id, _)| s.contains_key(id)).count())
            .unwrap_or(0);
        if replied == sent.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lat: Vec<f64> = seen
        .lock()
        .map(|s| {
            sent.iter()
                .filter_map(|(id, at)| {
                    s.get(id)
                        .map(|r| r.saturating_duration_since(*at).as_secs_f64() * 1000.0)
                })
                .collect()
        })
        .unwrap_or_default();
    let replied = lat.len();
    let latency_ms = percentiles(&mut lat);
    let kept_up =
        !sent.is_empty() && replied as f64 >= KEPT_UP_SHARE * n as f64 && latency_ms.p99 < KEPT_UP_P99_MS;
    Step {
        rate,
        sent: sent.len(),
        replied,
        replied_per_s: replied as f64 / secs,
        latency_ms,
        kept_up,
    }
}

/// Steps the rate up from `start` by ×1.5 until the mesh no longer keeps up (at most `max_steps`),
/// then measures at 50 % and 90 % of the highest rate it kept up with.
pub async fn run(
    mesh: &TestMesh,
    conversations: usize,
    start: f64,
    max_steps: usize,
    secs: f64,
    token_ms: u64,
) -> anyhow::Result<ChatReport> {
    let convs: Vec<String> = (0..conversations).map(|i| format!("bench-{i}")).collect();
    let seen: Seen = Arc::default();
    let sockets = watch(mesh, &convs, &seen).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()?;
    let urls: Vec<String> = mesh.workers.iter().map(|w| w.url.clone()).collect();
    let grace = Duration::from_secs(10);
    // warm-up, not recorded: connection pools and first-touch allocations of a fresh mesh
    step(&client, &urls, &convs, &seen, start, secs.min(3.0), grace).await;
    let mut steps = Vec::new();
    let mut rate = start;
    for _ in 0..max_steps {
        let s = step(&client, &urls, &convs, &seen, rate, secs, grace).await;
        eprintln!(
            "chat: {:.0}/s offered, {} sent, {} replied, p50 {:.1} ms, p99 {:.1} ms{}",
            s.rate,
            s.sent,
            s.replied,
            s.latency_ms.p50,
            s.latency_ms.p99,
            if s.kept_up { "" } else { " (not kept up)" }
        );
        let kept_up = s.kept_up;
        steps.push(s);
        if !kept_up {
            break;
        }
        rate *= 1.5;
    }
    let max_sustained = steps
        .iter()
        .filter(|s| s.kept_up)
        .map(|s| s.rate)
        .fold(0.0, f64::max);
    let (at_half, at_90) = if max_sustained > 0.0 {
        // the last step overloaded the mesh: let it drain its backlog (lag, snapshot rounds)
        // before measuring below the maximum
        tokio::time::sleep(Duration::from_secs_f64(secs.max(1.0) * 2.0)).await;
        let half = step(&client, &urls, &convs, &seen, max_sustained * 0.5, secs, grace).await;
        tokio::time::sleep(Duration::from_secs_f64(secs.max(1.0))).await;
        let ninety = step(&client, &urls, &convs, &seen, max_sustained * 0.9, secs, grace).await;
        (Some(half), Some(ninety))
    } else {
        (None, None)
    };
    drop(sockets);
    Ok(ChatReport {
        workers: mesh.workers.len(),
        conversations,
        token_ms,
        steps,
        max_sustained,
        at_half,
        at_90,
    })
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Worker RSS idle, then after `conversations` new conversations of one exchange each.
pub async fn memory(mesh: &TestMesh, conversations: usize) -> anyhow::Result<MemoryReport> {
    let pids: Vec<u32> = mesh.workers.iter().filter_map(|w| w.pid()).collect();
    let idle_mb: Vec<f64> = pids.iter().map(|p| rss_mb(*p)).collect();
    let baseline = mesh.llm.stats().await?["requests"].as_u64().unwrap_or(0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()?;
    let urls: Vec<String> = mesh.workers.iter().map(|w| w.url.clone()).collect();
    let mut tasks = JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..conversations {
        let (client, url, sem) = (
            client.clone(),
            format!("{}/api/chat/send", urls[i % urls.len()]),
            sem.clone(),
        );
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let body = json!({"conversationId": format!("resident-{i}"), "userId": "bench", "content": "remember me"});
            client.post(&url).json(&body).send().await.is_ok()
        });
    }
    while tasks.join_next().await.is_some() {}
    // every conversation is resident once its message was answered: count LLM calls
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let calls = mesh
            .llm
            .stats()
            .await
            .ok()
            .and_then(|v| v["requests"].as_u64())
            .unwrap_or(0);
        if calls >= baseline + conversations as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last: Vec<f64> = pids.iter().map(|p| rss_mb(*p)).collect();
    let growth: f64 = last.iter().zip(&idle_mb).map(|(a, b)| (a - b).max(0.0)).sum();
    Ok(MemoryReport {
        idle_mb,
        conversations,
        loaded_mb: last,
        bytes_per_conversation: growth * 1024.0 * 1024.0 / conversations.max(1) as f64,
    })
}
