//! Live streams: `GET /api/chat/ws?conversationId=…` (WebSocket) and
//! `GET /api/chat/conversation/{id}/events` (SSE). Both carry the same JSON events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use std::sync::Arc;

use meshchat_wire::PresenceKind;

use super::ChatService;
use super::error::AppError;
use crate::validate::{FieldError, check_id};

/// Upgrades to a WebSocket that receives the conversation's live events as JSON text frames.
pub async fn websocket<S: ChatService>(
    State(state): State<Arc<S>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let conversation = query
        .get("conversationId")
        .ok_or_else(|| FieldError::new("conversationId", "query parameter is required"))?
        .clone();
    check_id("conversationId", &conversation)?;
    let user = optional_user(&query)?;
    let ws =
        ws.map_err(|e| FieldError::new("upgrade", format!("not a WebSocket handshake: {}", e.body_text())))?;
    // subscribe before the upgrade completes, so nothing sent after the 101 is missed
    let rx = state.subscribe(&conversation);
    Ok(ws
        .on_upgrade(move |socket| async move {
            let _online = user.map(|u| Online::new(&state, &conversation, u));
            serve_socket(state, socket, rx).await;
        })
        .into_response())
}

fn optional_user(query: &HashMap<String, String>) -> Result<Option<String>, FieldError> {
    match query.get("userId") {
        None => Ok(None),
        Some(u) => {
            check_id("userId", u)?;
            Ok(Some(u.clone()))
        }
    }
}

/// Publishes `online` for a user while their live connection lasts, `offline` when it ends.
struct Online<S: ChatService> {
    service: Arc<S>,
    conversation: String,
    user: String,
}

impl<S: ChatService> Online<S> {
    fn new(service: &Arc<S>, conversation: &str, user: String) -> Self {
        service.presence(conversation, &user, PresenceKind::Online);
        Self {
            service: service.clone(),
            conversation: conversation.to_string(),
            user,
        }
    }
}

impl<S: ChatService> Drop for Online<S> {
    fn drop(&mut self) {
        self.service
            .presence(&self.conversation, &self.user, PresenceKind::Offline);
    }
}

async fn serve_socket<S: ChatService>(
    state: Arc<S>,
    socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::view::LiveEvent>>,
) {
    let (mut tx, mut incoming) = socket.split();
    let shutdown = state.closing();
    let mut send = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                () = shutdown.cancelled() => break,
            };
            let text = match event {
                Ok(e) => serde_json::to_string(&*e).unwrap_or_default(),
                Err(RecvError::Lagged(n)) => format!(r#"{{"type":"lagged","missed":{n}}}"#),
                Err(RecvError::Closed) => break,
            };
            if tx.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    });
    // the client only sends pings and close frames; reading keeps them flowing
    let mut recv = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    });
    tokio::select! {
        _ = &mut send => recv.abort(),
        _ = &mut recv => send.abort(),
    }
}

/// Server-sent events of a conversation; the event name is the event's `type`.
pub async fn sse<S: ChatService>(
    State(state): State<Arc<S>>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    check_id("id", &id)?;
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let user = optional_user(&query)?;
    let mut rx = state.subscribe(&id);
    let shutdown = state.closing();
    let online = user.map(|u| Online::new(&state, &id, u));
    let stream = async_stream(move |yield_| async move {
        let _online = online;
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                () = shutdown.cancelled() => return,
            };
            let ev = match event {
                Ok(e) => Event::default()
                    .event(e.name())
                    .data(serde_json::to_string(&*e).unwrap_or_default()),
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!(r#"{{"type":"lagged","missed":{n}}}"#)),
                Err(RecvError::Closed) => return,
            };
            if yield_.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a task through a bounded channel (ends when the task ends or the client
/// goes away).
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
