//! An OpenAI-compatible fake LLM for tests and local runs: `/v1/chat/completions` (streaming
//! SSE and plain JSON) and `/v1/models`, with deterministic replies derived from the prompt,
//! per-token latency and failure injection.
//!
//! Failure injection, by markers in the last user message:
//! - `[fail:503]` every attempt answers that status;
//! - `[fail-once:500]` the first attempt for this exact prompt fails, later ones succeed;
//! - `[stall]` never answers; `[stall-mid]` streams two tokens, then stalls;
//! - `[slow:200]` waits that many ms per token;
//! - `[big:1200000]` answers with about that many bytes (in 1 KiB tokens);
//! - `[retry-after:2]` an injected failure carries `Retry-After: 2`.
//!
//! Or globally with `POST /control {"failNext": 3, "status": 500}` / `{"stallNext": 1}`;
//! `GET /stats` counts requests (per `[tag:x]` too, with each one's arrival in unix ms and
//! `traceparent` header).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug, Clone)]
#[command(about = "OpenAI-compatible fake LLM for MeshChat tests and local runs")]
struct Args {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "FAKE_LLM_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Delay before each streamed token, in milliseconds.
    #[arg(long, env = "FAKE_LLM_TOKEN_LATENCY_MS", default_value_t = 0)]
    token_latency_ms: u64,
    /// Delay before the first token, in milliseconds.
    #[arg(long, env = "FAKE_LLM_FIRST_TOKEN_MS", default_value_t = 0)]
    first_token_ms: u64,
}

#[derive(Default)]
struct Control {
    fail_next: u32,
    fail_status: u16,
    stall_next: u32,
}

struct AppState {
    args: Args,
    requests: AtomicU64,
    failed: AtomicU64,
    stalled: AtomicU64,
    seen: Mutex<HashMap<String, u32>>,
    control: Mutex<Control>,
    by_marker: Mutex<HashMap<String, u64>>,
    /// Streams the client dropped before their end, and when the last one of a tag was
    /// (Unix ms): what a cancel's latency is measured against.
    aborted: AtomicU64,
    aborted_at: Mutex<HashMap<String, u128>>,
    /// When each request of a tag arrived (unix ms).
    arrived_at: Mutex<HashMap<String, Vec<u128>>>,
    /// The W3C `traceparent` each request of a tag came with ("" for none).
    traceparents: Mutex<HashMap<String, Vec<String>>>,
}

/// Counts a stream dropped before its end (the client went away: a cancel).
struct Unfinished {
    state: Shared,
    tag: Option<String>,
    done: bool,
}

impl Unfinished {
    /// The stream reached its end.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.state.aborted.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        if let (Some(tag), Ok(mut m)) = (&self.tag, self.state.aborted_at.lock()) {
            m.insert(tag.clone(), now);
        }
    }
}

type Shared = Arc<AppState>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // like real LLM servers: stream tokens without Nagle's delay
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        args,
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stalled: AtomicU64::new(0),
        seen: Mutex::new(HashMap::new()),
        control: Mutex::new(Control::default()),
        by_marker: Mutex::new(HashMap::new()),
        aborted: AtomicU64::new(0),
        aborted_at: Mutex::new(HashMap::new()),
        arrived_at: Mutex::new(HashMap::new()),
        traceparents: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/control", post(control))
        .route("/stats", get(stats))
        .with_state(state);
    // the harness and `make run` read this line to learn the port
    println!("fake-llm listening on http://{addr}/v1");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "meshchat"}]}))
}

async fn stats(State(s): State<Shared>) -> Json<Value> {
    let by_marker = s.by_marker.lock().map(|m| m.clone()).unwrap_or_default();
    Json(json!({
        "requests": s.requests.load(Ordering::Relaxed),
        "failed": s.failed.load(Ordering::Relaxed),
        "stalled": s.stalled.load(Ordering::Relaxed),
        "byTag": by_marker,
        "aborted": s.aborted.load(Ordering::Relaxed),
        "abortedAtMs": s.aborted_at.lock().map(|m| m.clone()).unwrap_or_default(),
        "arrivedAtMs": s.arrived_at.lock().map(|m| m.clone()).unwrap_or_default(),
        "traceparentByTag": s.traceparents.lock().map(|m| m.clone()).unwrap_or_default(),
    }))
}

async fn control(State(s): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    if let Ok(mut c) = s.control.lock() {
        c.fail_next = body["failNext"].as_u64().unwrap_or(0) as u32;
        c.fail_status = body["status"].as_u64().unwrap_or(500) as u16;
        c.stall_next = body["stallNext"].as_u64().unwrap_or(0) as u32;
    }
    Json(json!({"ok": true}))
}

/// What the request should get.
enum Plan {
    /// A status, and the `Retry-After` seconds to send with it.
    Fail(u16, Option<u64>),
    Stall,
    Answer {
        tokens: Vec<String>,
        stall_mid: bool,
        per_token: Duration,
    },
}

fn marker<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("[{name}:"))? + name.len() + 2;
    let end = text[start..].find(']')? + start;
    Some(&text[start..end])
}

/// The request's last user message.
fn last_user_text(body: &Value) -> Option<String> {
    body["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .map(str::to_string)
}

fn plan(s: &AppState, body: &Value) -> Plan {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = last_user_text(body).unwrap_or_default();
    // count requests per tag `[tag:x]` so tests can assert attempts
    if let Some(tag) = marker(&last_user, "tag")
        && let Ok(mut m) = s.by_marker.lock()
    {
        *m.entry(tag.to_string()).or_default() += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        if let Ok(mut at) = s.arrived_at.lock() {
            at.entry(tag.to_string()).or_default().push(now);
        }
    }
    let retry_after = marker(&last_user, "retry-after").and_then(|n| n.parse().ok());
    if let Ok(mut c) = s.control.lock() {
        if c.stall_next > 0 {
            c.stall_next -= 1;
            return Plan::Stall;
        }
        if c.fail_next > 0 {
            c.fail_next -= 1;
            return Plan::Fail(c.fail_status, retry_after);
        }
    }
    if let Some(code) = marker(&last_user, "fail").and_then(|c| c.parse().ok()) {
        return Plan::Fail(code, retry_after);
    }
    if let Some(code) = marker(&last_user, "fail-once").and_then(|c| c.parse::<u16>().ok()) {
        let attempt = s
            .seen
            .lock()
            .map(|mut seen| {
                let n = seen.entry(last_user.clone()).or_default();
                *n += 1;
                *n
            })
            .unwrap_or(1);
        if attempt == 1 {
            return Plan::Fail(code, retry_after);
        }
    }
    if last_user.contains("[stall]") {
        return Plan::Stall;
    }
    let per_token = marker(&last_user, "slow")
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(s.args.token_latency_ms));
    let turns = messages.iter().filter(|m| m["role"] == "user").count();
    let text = format!(
        "Reply to \"{}\" (turn {turns}, {} messages in context)",
        last_user,
        messages.len()
    );
    let mut tokens: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    if let Some(bytes) = marker(&last_user, "big").and_then(|n| n.parse::<usize>().ok()) {
        let piece = "lorem ipsum dolor sit amet ".repeat(38);
        tokens.extend(std::iter::repeat_n(piece.clone(), bytes / piece.len() + 1));
    }
    Plan::Answer {
        tokens,
        stall_mid: last_user.contains("[stall-mid]"),
        per_token,
    }
}

async fn completions(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(tag) = last_user_text(&body).and_then(|t| marker(&t, "tag").map(str::to_string))
        && let Ok(mut m) = s.traceparents.lock()
    {
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        m.entry(tag).or_default().push(traceparent.to_string());
    }
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    match plan(&s, &body) {
        Plan::Fail(code, retry_after) => {
            s.failed.fetch_add(1, Ordering::Relaxed);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let err = json!({"error": {"message": format!("injected failure {code}"), "type": "server_error", "param": null, "code": null}});
            let mut response = (status, Json(err)).into_response();
            if let Some(secs) = retry_after
                && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            response
        }
        Plan::Stall => {
            s.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Plan::Answer {
            tokens,
            stall_mid,
            per_token,
        } => {
            let first = Duration::from_millis(s.args.first_token_ms);
            if stream {
                let unfinished = Unfinished {
                    tag: last_user_text(&body).and_then(|t| marker(&t, "tag").map(str::to_string)),
                    state: s.clone(),
                    done: false,
                };
                sse(model, tokens, stall_mid, first, per_token, unfinished).into_response()
            } else {
                tokio::time::sleep(first + per_token * tokens.len() as u32).await;
                Json(json!({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": tokens.concat()}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": tokens.len(), "total_tokens": tokens.len()}
                }))
                .into_response()
            }
        }
    }
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Event {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    Event::default().data(body.to_string())
}

fn sse(
    model: String,
    tokens: Vec<String>,
    stall_mid: bool,
    first: Duration,
    per_token: Duration,
    mut unfinished: Unfinished,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stream = async_stream::stream! {
        // token i is due at start + first + (i + 1) * per_token, however late the previous
        // one left: a model's pace, without the timer's rounding piling up per token
        let start = tokio::time::Instant::now();
        tokio::time::sleep_until(start + first).await;
        yield Ok(chunk(&model, json!({"role": "assistant", "content": ""}), None));
        let mut due = start + first;
        for (i, t) in tokens.into_iter().enumerate() {
            if stall_mid && i == 2 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if !per_token.is_zero() {
                due += per_token;
                tokio::time::sleep_until(due).await;
            }
            yield Ok(chunk(&model, json!({"content": t}), None));
        }
        yield Ok(chunk(&model, json!({}), Some("stop")));
        unfinished.finish();
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(stream)
}
