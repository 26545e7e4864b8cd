//! The internal listener's handlers: what only the mesh and the kubelet call. Probes and metrics
//! are open (the network policy keeps clients away); the drain needs a caller inside the pod
//! (loopback) or the mesh secret; peers' forwarded reads need the mesh secret when one is set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use meshchat_wire::split_key;
use serde_json::json;
use subtle::ConstantTimeEq;

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};

use super::caller::bearer;
use super::error::AppError;
use super::feed::{Feed, FeedNext};
use super::stream::open_failed;
use super::{ChatService, Local, Membership};
use crate::live::{Cursor, FROM_HEADER, KEEP_ALIVE, Relayed};
use crate::validate::FieldError;
use crate::validate::check_id;

/// Whether the request carries `Authorization: Bearer <mesh secret>`. Compared in constant time.
fn has_mesh_secret(headers: &HeaderMap, secret: &str) -> bool {
    bearer(headers).is_some_and(|given| bool::from(given.as_bytes().ct_eq(secret.as_bytes())))
}

/// A caller inside the pod: the connection came over loopback.
fn from_loopback(extensions: &Extensions) -> bool {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback())
}

/// The drain's guard: from inside the pod, or with the mesh secret.
fn may_drain<S: ChatService>(s: &S, extensions: &Extensions, headers: &HeaderMap) -> Result<(), AppError> {
    let secret_ok = s
        .settings()
        .mesh_secret
        .as_deref()
        .is_some_and(|secret| has_mesh_secret(headers, secret));
    if from_loopback(extensions) || secret_ok {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

/// `GET|POST /drain`: the preStop hook (`meshchat-worker drain`). Starts draining and answers
/// once every partition is handed over, or the drain timeout passed; SIGTERM then finds nothing
/// left to move.
pub async fn drain<S: ChatService>(
    State(s): State<Arc<S>>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    may_drain(s.as_ref(), &extensions, &headers)?;
    let (outcome, held) = s.drain().await;
    Ok(Json(json!({"drained": outcome.as_str(), "partitionsHeld": held})).into_response())
}

/// `DELETE /drain`: undoes a drain SIGTERM did not follow (a preStop hook whose pod was not
/// deleted after all, a drain started by hand).
pub async fn undo_drain<S: ChatService>(
    State(s): State<Arc<S>>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    may_drain(s.as_ref(), &extensions, &headers)?;
    let was = s.undo_drain().map_err(|e| AppError::Conflict(e.to_string()))?;
    Ok(Json(json!({"draining": false, "wasDraining": was})).into_response())
}

/// Peers present the mesh secret, when the mesh has one.
fn from_peer<S: ChatService>(s: &S, headers: &HeaderMap) -> Result<(), AppError> {
    match s.settings().mesh_secret.as_deref() {
        Some(secret) if !has_mesh_secret(headers, secret) => Err(AppError::Unauthorized),
        _ => Ok(()),
    }
}

fn check_key(key: &str) -> Result<&str, AppError> {
    let (tenant, id) = split_key(key);
    check_id("tenant", tenant)?;
    check_id("id", id)?;
    Ok(id)
}

/// `GET /internal/conversation/{key}`: a peer's read of a conversation this worker owns.
/// Served from memory, or from the log when the partition moved meanwhile; never forwarded
/// again.
pub async fn forwarded_read<S: ChatService>(
    State(s): State<Arc<S>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    from_peer(&*s, &headers)?;
    let id = check_key(&key)?;
    s.wake(&key).await;
    match s.local_conversation(&key) {
        Local::Found(view) => return Ok(Json(view).into_response()),
        Local::Missing => return Err(AppError::NotFound(format!("conversation {id:?} not found"))),
        Local::NotHere => {}
    }
    let view = s
        .read_log(&key)
        .await
        .map_err(|e| AppError::Unavailable(format!("could not read the log: {e}")))?;
    let view = view.ok_or_else(|| AppError::NotFound(format!("conversation {id:?} not found")))?;
    Ok(Json(view).into_response())
}

/// `GET /internal/membership/{key}?user=…`: whether a user takes part in a conversation this
/// worker owns (a peer checks before accepting that user's message). From memory, or from the
/// log when the partition moved meanwhile; never forwarded again.
pub async fn membership<S: ChatService>(
    State(s): State<Arc<S>>,
    Path(key): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    from_peer(&*s, &headers)?;
    check_key(&key)?;
    let user = query.get("user").map(String::as_str).unwrap_or_default();
    s.wake(&key).await;
    let membership = match s.local_membership(&key, user) {
        Some(m) => m,
        None => {
            let view = s
                .read_log(&key)
                .await
                .map_err(|e| AppError::Unavailable(format!("could not read the log: {e}")))?;
            Membership::of(view.as_ref().map(|v| v.participants.as_slice()), user)
        }
    };
    Ok(Json(json!({"membership": membership})).into_response())
}

/// `GET /internal/live/{key}?after=<event id>`: a conversation's live events for a peer whose
/// clients watch it (SSE; each event names its record, see `live::Relayed`). Read by this
/// worker's fan-out, never relayed again. The stream ends when this worker's fan-out restarts,
/// when the peer falls behind, and once another worker has owned the conversation for a while:
/// the peer then goes on from its last event wherever the conversation is served.
pub async fn live<S: ChatService>(
    State(s): State<Arc<S>>,
    Path(key): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    from_peer(&*s, &headers)?;
    check_key(&key)?;
    if s.closing().is_cancelled() {
        // the peer reads the conversation itself rather than follow a stream about to end
        return Err(AppError::Unavailable("this worker is shutting down".into()));
    }
    let after = query
        .get("after")
        .map(|a| {
            a.parse::<Cursor>()
                .map_err(|e| FieldError::new("after", e.to_string()))
        })
        .transpose()?;
    let closing = s.closing();
    let mut feed = tokio::select! {
        feed = Feed::open(&s, &key, after, false) => feed.map_err(|e| open_failed(e, "after"))?,
        () = closing.cancelled() => return Err(AppError::Unavailable("this worker is shutting down".into())),
    };
    let from = feed.position();
    let (shutdown, me) = (s.closing(), s.settings().node_id.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let mut look = tokio::time::interval(OWNER_LOOK);
        let mut elsewhere = 0;
        loop {
            let event = tokio::select! {
                e = feed.next() => e,
                _ = look.tick() => {
                    let moved = s.owner_of(&key).is_some_and(|o| o.node_id != me);
                    elsewhere = if moved { elsewhere + 1 } else { 0 };
                    // twice in a row: the new owner has had time to hear of it too
                    if elsewhere >= 2 {
                        return;
                    }
                    continue;
                }
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            };
            let FeedNext::Event(e, id) = event else { return };
            let ev = Event::default().id(id.to_string()).data(Relayed::encode(&e));
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    });
    let body = Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(([(FROM_HEADER, from.to_string())], body).into_response())
}

/// How often a relayed stream looks whether its conversation moved to another worker.
const OWNER_LOOK: std::time::Duration = std::time::Duration::from_secs(5);
