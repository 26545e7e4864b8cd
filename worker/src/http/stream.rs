//! Live streams: `GET /api/chat/ws?conversationId=…` (WebSocket) and
//! `GET /api/chat/conversation/{id}/events` (SSE). Both carry the same JSON events.
//!
//! Every event carries an `id`: the client's position in the conversation's logs after it
//! (`live::Cursor`). A client that reconnects — to any worker — with the last id it got
//! (`Last-Event-ID`, as browsers' EventSource send it, or `?after=`) is sent exactly the events
//! after it: those it missed are read back from the log, then live delivery continues.
//!
//! A `user` may watch a conversation it takes part in, or one that does not exist yet (to
//! watch the conversation it is about to start). In the second case the stream shows nothing
//! until the conversation's first message arrives, and ends if someone else sent it: a
//! conversation started by another user is not this user's to watch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use meshchat_wire::PresenceKind;

use super::caller::{Caller, LiveCaller, WS_PROTOCOL};
use super::chat::may_take_part;
use super::error::AppError;
use super::feed::{Feed, FeedNext, OpenError};
use super::{ChatService, Membership};
use crate::auth::Role;
use crate::limits::StreamPermit;
use crate::live::{CatchUpError, Cursor, Positioned};
use crate::validate::{FieldError, check_id};
use crate::view::LiveEvent;

/// The header a reconnecting EventSource sends its last event id in.
const LAST_EVENT_ID: &str = "last-event-id";

/// Upgrades to a WebSocket that receives the conversation's live events as JSON text frames.
pub async fn websocket<S: ChatService>(
    State(state): State<Arc<S>>,
    live: LiveCaller,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    live.caller.chats()?;
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let conversation = query
        .get("conversationId")
        .ok_or_else(|| FieldError::new("conversationId", "query parameter is required"))?
        .clone();
    check_id("conversationId", &conversation)?;
    let after = resume_point(None, &query)?;
    let ws =
        ws.map_err(|e| FieldError::new("upgrade", format!("not a WebSocket handshake: {}", e.body_text())))?;
    let watch = Watch::open(&state, &live.caller, &conversation, &query, after).await?;
    let ws = if live.via_protocol {
        ws.protocols([WS_PROTOCOL])
    } else {
        ws
    };
    // clients send nothing the worker needs: a large message is a mistake or an attack, and
    // closes the socket
    let max = state.limits().settings().ws_max_message_bytes;
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move { serve_socket(state, socket, watch).await })
        .into_response())
}

/// Server-sent events of a conversation; the event name is the event's `type`.
pub async fn sse<S: ChatService>(
    State(state): State<Arc<S>>,
    live: LiveCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    live.caller.chats()?;
    check_id("id", &id)?;
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let after = resume_point(Some(&headers), &query)?;
    let mut watch = Watch::open(&state, &live.caller, &id, &query, after).await?;
    let shutdown = state.closing();
    let stream = async_stream(move |yield_| async move {
        loop {
            let event = tokio::select! {
                e = watch.next() => e,
                () = shutdown.cancelled() => return,
            };
            let (ev, last) = match event {
                Next::Event(e, id) => (
                    Event::default()
                        .id(id.to_string())
                        .event(e.event.name())
                        .data(delivered(&e.event, id)),
                    false,
                ),
                // events were missed: the stream ends, and the client's reconnect (from its
                // last id) reads them back
                Next::Lagged(n) => (
                    Event::default()
                        .event("lagged")
                        .data(format!(r#"{{"type":"lagged","missed":{n}}}"#)),
                    true,
                ),
                Next::End => return,
            };
            if yield_.send(Ok(ev)).await.is_err() || last {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One caller's view of a conversation's live events.
struct Watch<S: ChatService> {
    /// Its events, each once, from wherever they are served.
    feed: Feed<S>,
    /// This stream's place among the caller's, the tenant's and the worker's.
    _permit: StreamPermit,
    /// Set while a `user` watches a conversation that did not exist: the user whose message
    /// must come first.
    starter: Option<String>,
    _online: Option<Online<S>>,
}

enum Next {
    /// An event and its id.
    Event(Arc<Positioned>, Cursor),
    Lagged(u64),
    End,
}

/// Where a client resumes, `Last-Event-ID` (SSE only) or `?after=`, and which of them said so.
fn resume_point(
    headers: Option<&HeaderMap>,
    query: &HashMap<String, String>,
) -> Result<Option<(Cursor, &'static str)>, FieldError> {
    let header = headers
        .and_then(|h| h.get(LAST_EVENT_ID))
        .map(|v| (v.to_str().unwrap_or("\u{fffd}"), "Last-Event-ID"));
    let Some((raw, field)) = header.or_else(|| query.get("after").map(|a| (a.as_str(), "after"))) else {
        return Ok(None);
    };
    raw.parse()
        .map(|c| Some((c, field)))
        .map_err(|e: crate::live::BadCursor| FieldError::new(field, e.to_string()))
}

/// A feed that could not start, as the caller is told (`field` named the resume point).
pub(super) fn open_failed(e: OpenError, field: &str) -> AppError {
    match e {
        OpenError::CatchUp(e @ CatchUpError::Beyond { .. }) => {
            AppError::Field(FieldError::new(field, e.to_string()))
        }
        OpenError::CatchUp(CatchUpError::Kafka(e)) => {
            AppError::Unavailable(format!("reading the conversation back: {e}"))
        }
        OpenError::NotServing(e) => AppError::Unavailable(e.to_string()),
    }
}

/// An event as sent: its JSON with its `id`.
fn delivered(event: &LiveEvent, id: Cursor) -> String {
    #[derive(serde::Serialize)]
    struct Delivered<'a> {
        id: String,
        #[serde(flatten)]
        event: &'a LiveEvent,
    }
    serde_json::to_string(&Delivered {
        id: id.to_string(),
        event,
    })
    .unwrap_or_default()
}

impl<S: ChatService> Watch<S> {
    async fn open(
        state: &Arc<S>,
        caller: &Caller,
        id: &str,
        query: &HashMap<String, String>,
        after: Option<(Cursor, &'static str)>,
    ) -> Result<Self, AppError> {
        let who = &caller.who;
        let key = who.key(id);
        state.limits().admit_read(&who.tenant, &who.user)?;
        let permit = state.limits().open_stream(&who.tenant, &who.user)?;
        let membership = if who.role == Role::User {
            may_take_part(&**state, &key, &who.user, id).await?
        } else {
            Membership::Member
        };
        // the feed starts before answering, so nothing sent after the 101 or the SSE headers
        // is missed; a resume's events before that are read back from the log
        let feed = Feed::open(state, &key, after.map(|(c, _)| c), true)
            .await
            .map_err(|e| open_failed(e, after.map_or("after", |(_, f)| f)))?;
        // presence is asked for with `?presence` (or the original API's `?userId=`); the user
        // shown is the caller — a query's userId is trusted only with --auth none
        let presence_of = if caller.anonymous {
            match query.get("userId") {
                Some(u) => {
                    check_id("userId", u)?;
                    Some(u.clone())
                }
                None => None,
            }
        } else if (query.contains_key("presence") || query.contains_key("userId"))
            && membership == Membership::Member
        {
            Some(who.user.clone())
        } else {
            None
        };
        Ok(Self {
            feed,
            _permit: permit,
            starter: (membership == Membership::Missing).then(|| who.user.clone()),
            _online: presence_of.map(|u| Online::new(state, &who.tenant, id, u)),
        })
    }

    async fn next(&mut self) -> Next {
        loop {
            let (event, id) = match self.feed.next().await {
                FeedNext::Event(e, id) => (e, id),
                FeedNext::Lagged(n) => return Next::Lagged(n),
                FeedNext::End => return Next::End,
            };
            let Some(starter) = &self.starter else {
                return Next::Event(event, id);
            };
            match &event.event {
                LiveEvent::Message { message } if message.sender == *starter => {
                    self.starter = None;
                    return Next::Event(event, id);
                }
                // someone else started it: not this user's conversation
                LiveEvent::Message { .. } => return Next::End,
                _ => {}
            }
        }
    }
}

/// Publishes `online` for a user while their live connection lasts, `offline` when it ends.
struct Online<S: ChatService> {
    service: Arc<S>,
    tenant: String,
    conversation: String,
    user: String,
}

impl<S: ChatService> Online<S> {
    fn new(service: &Arc<S>, tenant: &str, conversation: &str, user: String) -> Self {
        service.presence(tenant, conversation, &user, PresenceKind::Online);
        Self {
            service: service.clone(),
            tenant: tenant.to_string(),
            conversation: conversation.to_string(),
            user,
        }
    }
}

impl<S: ChatService> Drop for Online<S> {
    fn drop(&mut self) {
        self.service.presence(
            &self.tenant,
            &self.conversation,
            &self.user,
            PresenceKind::Offline,
        );
    }
}

async fn serve_socket<S: ChatService>(state: Arc<S>, socket: WebSocket, mut watch: Watch<S>) {
    let (mut tx, mut incoming) = socket.split();
    let shutdown = state.closing();
    let every = state.limits().settings().ws_ping;
    // when the client last showed it is there (any frame, pongs included), in ms since `start`
    let start = tokio::time::Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let heard_by_reader = heard.clone();
    let mut send = tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(start + every, every);
        loop {
            let event = tokio::select! {
                e = watch.next() => e,
                () = shutdown.cancelled() => break,
                _ = ping.tick() => {
                    let quiet = start.elapsed().saturating_sub(Duration::from_millis(heard.load(Ordering::Relaxed)));
                    if quiet > every * 2 {
                        // a half-open socket: nothing came back to two pings
                        tracing::debug!(quiet_ms = quiet.as_millis() as u64, "closing a WebSocket whose client answers no pings");
                        break;
                    }
                    if tx.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (text, last) = match event {
                Next::Event(e, id) => (delivered(&e.event, id), false),
                // events were missed: the socket closes; the client reconnects with `?after=`
                Next::Lagged(n) => (format!(r#"{{"type":"lagged","missed":{n}}}"#), true),
                Next::End => break,
            };
            if tx.send(Message::Text(text.into())).await.is_err() {
                return;
            }
            if last {
                break;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    });
    // the client only sends pings, pongs and close frames; reading keeps them flowing, and a
    // message over the size limit is an error that ends the socket
    let mut recv = tokio::spawn(async move {
        loop {
            match incoming.next().await {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {
                    heard_by_reader.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "closing a WebSocket after a bad client frame");
                    break;
                }
            }
        }
    });
    tokio::select! {
        _ = &mut send => recv.abort(),
        _ = &mut recv => send.abort(),
    }
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
