//! The chat path end to end: `POST /api/chat/send` → the reply visible on a WebSocket opened
//! before the load, under an open-loop generator (sends leave on schedule whatever the replies
//! do, and latency counts from the *scheduled* time, so no coordinated omission). Rates step up
//! until the mesh stops keeping up; then the latency at 50 % and 90 % of the highest rate it kept
//! up with. Also worker memory: RSS idle and after many resident conversations.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::cpu::{RoleUse, Roles};
use super::{Percentiles, percentiles, proc_kb};
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
    /// The same less the fake LLM's own time for that reply (first token + tokens × per token).
    pub overhead_ms: Percentiles,
    /// The mesh kept up: ≥ 99 % replied and the overhead's p99 under the bound.
    pub kept_up: bool,
    /// CPU per role (and `total`) from the step's start until its replies were in.
    pub cpu: BTreeMap<String, RoleUse>,
    /// Partitions whose owner changed from the step's start until its replies were in (each
    /// such handoff pauses the partition's conversations; the balancer decides them).
    pub partitions_moved: usize,
}

/// What the chat phase measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChatReport {
    /// Workers in the mesh.
    pub workers: usize,
    /// Conversations the load spreads over (one WebSocket each).
    pub conversations: usize,
    /// The fake LLM's pace.
    pub llm: LlmPace,
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
    /// RSS of each worker with that many resident conversations (one exchange each).
    pub points: Vec<MemoryPoint>,
    /// Bytes per resident conversation: the marginal figure when there are two points, else
    /// growth since idle / conversations.
    pub bytes_per_conversation: f64,
    /// (RSS at the last point − RSS at the one before) / conversations added between them.
    pub marginal_bytes_per_conversation: Option<f64>,
}

/// Worker RSS with some number of resident conversations.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPoint {
    /// Resident conversations (over all workers).
    pub conversations: usize,
    /// RSS of each worker (MiB).
    pub rss_mb: Vec<f64>,
    /// (sum of RSS growth since idle) / conversations.
    pub bytes_per_conversation: f64,
}

/// Longest wait for an overloaded step's backlog.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);

/// Kept up = at least this share of the step's messages answered within the grace...
const KEPT_UP_SHARE: f64 = 0.99;
/// ...and the p99 of the time beyond the LLM's own below this: a chat whose replies lag by
/// seconds is not being served, however many replies eventually arrive.
const KEPT_UP_OVERHEAD_P99_MS: f64 = 500.0;

/// By the message a reply answers: when the reply arrived and how many tokens it had (the fake
/// LLM streams one token per word, so its time for the reply is known).
type Seen = Arc<Mutex<HashMap<String, (Instant, u32)>>>;

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
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())?;
        request
            .headers_mut()
            .extend(crate::auth::headers(&crate::auth::admin("bench")));
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
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
                    let tokens = v["message"]["content"]
                        .as_str()
                        .map_or(0, |c| c.split_inclusive(' ').count() as u32);
                    s.entry(id.to_string())
                        .or_insert_with(|| (Instant::now(), tokens));
                }
            }
        });
    }
    Ok(set)
}

/// Where a step's load goes and what it watches.
struct Target<'a> {
    client: reqwest::Client,
    urls: Vec<String>,
    conversations: &'a [String],
    seen: Seen,
    roles: &'a Roles,
    llm: LlmPace,
    /// Messages accepted by every step so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

/// Waits until every message accepted so far has its reply (at most `limit`), then `settle`:
/// a step after an overloaded one must not measure that one's backlog.
async fn drain(t: &Target<'_>, limit: Duration, settle: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let accepted = t.accepted.load(std::sync::atomic::Ordering::Relaxed);
        let replied = t.seen.lock().map_or(0, |s| s.len());
        if replied >= accepted || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;
}

/// The fake LLM's pace.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LlmPace {
    /// Before the first token.
    pub first_token_ms: u64,
    /// Per token.
    pub token_ms: u64,
}

impl LlmPace {
    /// How long the fake LLM takes to stream a reply of `tokens` tokens.
    pub fn time_ms(&self, tokens: u32) -> f64 {
        (self.first_token_ms + u64::from(tokens) * self.token_ms) as f64
    }
}

/// Offers `rate` messages/s for `secs`, then waits up to `grace` for the replies.
async fn step(t: &Target<'_>, rate: f64, secs: f64, grace: Duration) -> Step {
    let Target {
        client,
        urls,
        conversations,
        seen,
        roles,
        llm,
        accepted,
    } = t;
    let cpu = roles.start();
    let epochs_before = epochs(client, urls).await;
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
    accepted.fetch_add(sent.len(), std::sync::atomic::Ordering::Relaxed);
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
    let cpu = cpu.finish(sent.len());
    let epochs_after = epochs(client, urls).await;
    let partitions_moved = epochs_after
        .iter()
        .filter(|(p, e)| epochs_before.get(*p) != Some(*e))
        .count();
    let (mut lat, mut over): (Vec<f64>, Vec<f64>) = seen
        .lock()
        .map(|s| {
            sent.iter()
                .filter_map(|(id, at)| {
                    s.get(id).map(|(r, tokens)| {
                        let ms = r.saturating_duration_since(*at).as_secs_f64() * 1000.0;
                        (ms, ms - llm.time_ms(*tokens))
                    })
                })
                .unzip()
        })
        .unwrap_or_default();
    let replied = lat.len();
    let latency_ms = percentiles(&mut lat);
    let overhead_ms = percentiles(&mut over);
    let kept_up = !sent.is_empty()
        && replied as f64 >= KEPT_UP_SHARE * n as f64
        && overhead_ms.p99 < KEPT_UP_OVERHEAD_P99_MS;
    Step {
        rate,
        sent: sent.len(),
        replied,
        replied_per_s: replied as f64 / secs,
        latency_ms,
        overhead_ms,
        kept_up,
        cpu,
        partitions_moved,
    }
}

/// Each partition's ownership epoch, as the workers holding them report it (an epoch rises with
/// every owner change). A worker that does not answer contributes nothing.
async fn epochs(client: &reqwest::Client, urls: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for url in urls {
        let Ok(r) = client.get(format!("{url}/api/agent/status")).send().await else {
            continue;
        };
        let Ok(v) = r.json::<Value>().await else { continue };
        if let Some(m) = v["epochs"].as_object() {
            for (p, e) in m {
                if let Some(e) = e.as_u64() {
                    let slot = out.entry(p.clone()).or_insert(e);
                    *slot = (*slot).max(e);
                }
            }
        }
    }
    out
}

fn log_step(s: &Step) {
    eprintln!(
        "chat: {:.0}/s offered, {} sent, {} replied, p50 {:.1} ms, p99 {:.1} ms, overhead p99 {:.1} ms, \
         {:.0} µs CPU/msg, {} partitions moved{}",
        s.rate,
        s.sent,
        s.replied,
        s.latency_ms.p50,
        s.latency_ms.p99,
        s.overhead_ms.p99,
        s.cpu.get("total").map_or(f64::NAN, |u| u.us_per_message),
        s.partitions_moved,
        if s.kept_up { "" } else { " (not kept up)" }
    );
}

/// Steps the rate up from `start` by ×1.5 until the mesh no longer keeps up (at most `max_steps`),
/// tries once between the last kept and the missed rate, then measures at 50 % and 90 % of the
/// highest rate it kept up with.
pub async fn measure(
    mesh: &TestMesh,
    conversations: usize,
    start: f64,
    max_steps: usize,
    secs: f64,
    llm: LlmPace,
    roles: &Roles,
) -> anyhow::Result<ChatReport> {
    let convs: Vec<String> = (0..conversations).map(|i| format!("bench-{i}")).collect();
    let seen: Seen = Arc::default();
    let sockets = watch(mesh, &convs, &seen).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .default_headers(crate::auth::headers(&crate::auth::admin("bench")))
        .build()?;
    let urls: Vec<String> = mesh.workers.iter().map(|w| w.url.clone()).collect();
    let target = Target {
        client,
        urls,
        conversations: &convs,
        seen,
        roles,
        llm,
        accepted: Arc::default(),
    };
    let grace = Duration::from_secs(10);
    // warm-up, not recorded: connection pools and first-touch allocations of a fresh mesh
    step(&target, start, secs.min(3.0), grace).await;
    let mut steps = Vec::new();
    let mut rate = start;
    let settle = Duration::from_secs_f64(secs.clamp(1.0, 5.0));
    let mut last_kept = None;
    for _ in 0..max_steps {
        let s = step(&target, rate, secs, grace).await;
        log_step(&s);
        let kept_up = s.kept_up;
        steps.push(s);
        if !kept_up {
            break;
        }
        last_kept = Some(rate);
        rate *= 1.5;
    }
    // ×1.5 is coarse: one more step halfway (geometrically) between the last kept and the first
    // missed rate, after the overload's backlog has drained
    if let Some(ok) = last_kept
        && steps.last().is_some_and(|s| !s.kept_up)
    {
        drain(&target, DRAIN_LIMIT, settle).await;
        let s = step(&target, (ok * rate).sqrt(), secs, grace).await;
        log_step(&s);
        steps.push(s);
    }
    let max_sustained = steps
        .iter()
        .filter(|s| s.kept_up)
        .map(|s| s.rate)
        .fold(0.0, f64::max);
    let (at_half, at_90) = if max_sustained > 0.0 {
        // the last step overloaded the mesh: let it drain its backlog before measuring below
        // the maximum
        drain(&target, DRAIN_LIMIT, settle).await;
        let half = step(&target, max_sustained * 0.5, secs, grace).await;
        drain(&target, DRAIN_LIMIT, settle).await;
        let ninety = step(&target, max_sustained * 0.9, secs, grace).await;
        (Some(half), Some(ninety))
    } else {
        (None, None)
    };
    drop(sockets);
    Ok(ChatReport {
        workers: mesh.workers.len(),
        conversations,
        llm,
        steps,
        max_sustained,
        at_half,
        at_90,
    })
}

fn rss_mb(pid: u32) -> f64 {
    proc_kb(&format!("/proc/{pid}/status"), "VmRSS").map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Worker RSS idle, then with each of `targets` (ascending) resident conversations of one
/// exchange each.
pub async fn memory(mesh: &TestMesh, targets: &[usize]) -> anyhow::Result<MemoryReport> {
    let pids: Vec<u32> = mesh.workers.iter().filter_map(|w| w.pid()).collect();
    let idle_mb: Vec<f64> = pids.iter().map(|p| rss_mb(*p)).collect();
    let baseline = mesh.llm.stats().await?["requests"].as_u64().unwrap_or(0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .default_headers(crate::auth::headers(&crate::auth::admin("bench")))
        .build()?;
    let urls: Vec<String> = mesh.workers.iter().map(|w| w.url.clone()).collect();
    let mut points = Vec::new();
    let mut made = 0;
    for &target in targets {
        let mut tasks = JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        for i in made..target {
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
        made = made.max(target);
        // every conversation is resident once its message was answered: count LLM calls
        let deadline = Instant::now() + Duration::from_secs(900);
        while Instant::now() < deadline {
            let calls = mesh
                .llm
                .stats()
                .await
                .ok()
                .and_then(|v| v["requests"].as_u64())
                .unwrap_or(0);
            if calls >= baseline + made as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // a snapshot round after the last reply, so its buffers are counted too
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss: Vec<f64> = pids.iter().map(|p| rss_mb(*p)).collect();
        let growth: f64 = rss.iter().zip(&idle_mb).map(|(a, b)| (a - b).max(0.0)).sum();
        eprintln!("memory: {made} resident conversations, RSS {rss:.1?} MiB");
        points.push(MemoryPoint {
            conversations: made,
            rss_mb: rss,
            bytes_per_conversation: growth * 1024.0 * 1024.0 / made.max(1) as f64,
        });
    }
    // between the last two points: what one more resident conversation costs, without the
    // one-off growth of the first burst (connection pools, client queues, allocator arenas)
    let marginal = match points.as_slice() {
        [.., a, b] if b.conversations > a.conversations => {
            let (sa, sb): (f64, f64) = (a.rss_mb.iter().sum(), b.rss_mb.iter().sum());
            Some((sb - sa) * 1024.0 * 1024.0 / (b.conversations - a.conversations) as f64)
        }
        _ => None,
    };
    Ok(MemoryReport {
        idle_mb,
        bytes_per_conversation: marginal
            .or_else(|| points.last().map(|p| p.bytes_per_conversation))
            .unwrap_or(f64::NAN),
        marginal_bytes_per_conversation: marginal,
        points,
    })
}
