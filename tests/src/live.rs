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

/// Opens `ws://…/api/chat/ws?<query>`.
pub async fn connect_ws_query(base: &str, query: &str) -> anyhow::Result<LiveClient> {
    let url = format!("{}/api/chat/ws?{query}", base.replacen("http://", "ws://", 1));
    let (socket, _) = tokio_tungstenite::connect_async(&url)
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

/// Opens `GET …/api/chat/conversation/{id}/events` and parses `data:` lines.
pub async fn connect_sse(base: &str, conversation: &str) -> anyhow::Result<LiveClient> {
    let url = format!("{base}/api/chat/conversation/{conversation}/events");
    let resp = reqwest::Client::new().get(&url).send().await?; // no overall timeout: a stream
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
