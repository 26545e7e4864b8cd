//! Live clients: a WebSocket and an SSE reader that collect events as JSON.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

/// Events received by a live connection, in order.
pub struct LiveClient {
    events: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl LiveClient {
    /// A copy of what arrived so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Waits until an event satisfies `pred`.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        crate::wait_for(what, timeout, || async {
            self.events().iter().any(&pred).then_some(())
        })
        .await
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens `ws://…/api/chat/ws?conversationId=…`.
pub async fn connect_ws(base: &str, conversation: &str) -> anyhow::Result<LiveClient> {
    connect_ws_query(base, &format!("conversationId={conversation}")).await
}

/// Opens `ws://…/api/chat/ws?<query>` as the default tenant's admin.
pub async fn connect_ws_query(base: &str, query: &str) -> anyhow::Result<LiveClient> {
    connect_ws_as(base, query, Some(&crate::auth::admin("harness"))).await
}

/// The handshake request of `ws://…/api/chat/ws?<query>`, with `Authorization: Bearer <token>`
/// when given.
pub fn ws_request(
    base: &str,
    query: &str,
    token: Option<&str>,
) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/api/chat/ws?{query}", base.replacen("http://", "ws://", 1));
    let mut request = url.as_str().into_client_request()?;
    if let Some(t) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(request)
}

/// Opens `ws://…/api/chat/ws?<query>` with `Authorization: Bearer <token>` when given.
pub async fn connect_ws_as(base: &str, query: &str, token: Option<&str>) -> anyhow::Result<LiveClient> {
    let request = ws_request(base, query, token)?;
    let url = request.uri().to_string();
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting {url}"))?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let (_, mut read) = socket.split();
    let task = tokio::spawn(async move {
        while let Some(Ok(msg)) = read.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
                && let Ok(v) = serde_json::from_str::<Value>(&t)
                && let Ok(mut e) = sink.lock()
            {
                e.push(v);
            }
        }
    });
    Ok(LiveClient { events, task })
}

/// Opens `GET …/api/chat/conversation/{id}/events` as the default tenant's admin and parses
/// `data:` lines.
pub async fn connect_sse(base: &str, conversation: &str) -> anyhow::Result<LiveClient> {
    connect_sse_as(base, conversation, Some(&crate::auth::admin("harness"))).await
}

/// Opens the SSE stream of `conversation` with the bearer `token` when given.
pub async fn connect_sse_as(
    base: &str,
    conversation: &str,
    token: Option<&str>,
) -> anyhow::Result<LiveClient> {
    connect_sse_from(base, conversation, token, None).await
}

/// Opens the SSE stream of `conversation`, resuming after event `last_id` (sent as
/// `Last-Event-ID`, as a browser's EventSource does) when given.
pub async fn connect_sse_from(
    base: &str,
    conversation: &str,
    token: Option<&str>,
    last_id: Option<&str>,
) -> anyhow::Result<LiveClient> {
    let url = format!("{base}/api/chat/conversation/{conversation}/events");
    let mut request = reqwest::Client::new().get(&url); // no overall timeout: a stream
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let resp = request.send().await?;
    if resp.status() != 200 {
        bail!("SSE {url} answered {}", resp.status());
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut body = resp.bytes_stream();
    let task = tokio::spawn(async move {
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data: ")
                        && let Ok(v) = serde_json::from_str::<Value>(data)
                        && let Ok(mut e) = sink.lock()
                    {
                        e.push(v);
                    }
                }
            }
        }
    });
    Ok(LiveClient { events, task })
}
