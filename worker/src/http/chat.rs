//! `POST /api/chat/send` and `GET /api/chat/conversation/{id}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshchat_wire::{ChatRecord, KEYED_ID_PREFIX, SCHEMA_VERSION, UserMessage};
use serde_json::json;
use time::OffsetDateTime;

use crate::view::ConversationView;

use super::caller::Caller;
use super::error::{AppError, Body};
use super::{ChatService, Local, Membership};
use crate::auth::Role;
use crate::validate::{FieldError, SendRequest, check_id, parse_limit, parse_participant, parse_send};

/// How long a send waits for the broker's acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Header making a send idempotent: a retry with the same key (to the same conversation of the
/// tenant, for 24 h) gets the first send's message id and adds nothing.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Accepts a user message: validates it, writes it to `chat.messages` and answers once the
/// broker has acknowledged it. Any worker accepts any conversation. The sender is the caller;
/// a `user` may post to a conversation it takes part in or to a new one.
///
/// With an `Idempotency-Key`, the message id is derived from the tenant and the key, so a
/// retry reaching any worker, after any restart or move, carries the same id; the owner keeps
/// the first record with an id and drops later ones (they may still be written: a send that
/// timed out can land after its retry).
pub async fn send<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, AppError> {
    caller.chats()?;
    let req = parse_send(&body, s.settings().max_content_bytes, caller.anonymous)?;
    let keyed = idempotency_key(&headers)?;
    let (id, now) = accept(&*s, &caller, keyed, req).await?;
    let timestamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Json(json!({"message": "Message sent", "messageId": id, "timestamp": timestamp})).into_response())
}

/// The request's `Idempotency-Key`, if any, checked.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, FieldError> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| parse_idempotency_key(v.as_bytes()))
        .transpose()
}

/// Stores a validated user message from `caller` (limits, backlog, membership, idempotency)
/// and answers its id and acceptance time once the broker acknowledged it.
pub(super) async fn accept<S: ChatService>(
    s: &S,
    caller: &Caller,
    keyed: Option<&str>,
    req: SendRequest,
) -> Result<(String, OffsetDateTime), AppError> {
    accepting(s)?;
    let who = &caller.who;
    s.limits().admit_message(&who.tenant, &who.user)?;
    let key = who.key(&req.conversation_id);
    if let Some(behind) = s.backlog(&key)
        && behind > s.limits().settings().max_backlog
    {
        // the owner answers at its LLM's pace; a backlog past this would only grow
        return Err(AppError::Busy {
            message: format!(
                "this conversation's worker is {behind} messages behind; nothing was stored, retry shortly"
            ),
            retry_after: std::time::Duration::from_secs(5),
        });
    }
    let membership = if who.role == Role::User {
        Some(may_take_part(s, &key, &who.user, &req.conversation_id).await?)
    } else {
        None
    };
    let now = OffsetDateTime::now_utc();
    let id = match keyed {
        Some(k) => keyed_message_id(&who.tenant, &req.conversation_id, k),
        None => format!("msg-{}", uuid::Uuid::now_v7().simple()),
    };
    let message = UserMessage {
        v: SCHEMA_VERSION,
        id,
        conversation_id: req.conversation_id,
        tenant: who.tenant.clone(),
        user_id: req.user_id.unwrap_or_else(|| who.user.clone()),
        content: req.content,
        timestamp: req.timestamp.unwrap_or(now),
        accepted_by: s.settings().node_id.clone(),
        accepted_at: Some(now),
    };
    let (id, sender) = (message.id.clone(), message.user_id.clone());
    match tokio::time::timeout(SEND_TIMEOUT, s.append(message)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(AppError::Unavailable(format!(
                "Kafka did not accept the message: {e}"
            )));
        }
        Err(_) => {
            return Err(AppError::Unavailable(
                "Kafka did not acknowledge the message in time".into(),
            ));
        }
    }
    if membership != Some(Membership::Member) {
        s.joined(&key, &sender);
    }
    Ok((id, now))
}

/// Adds a user to a conversation of the caller's tenant: its admin may add anyone to any; a
/// `user` may add others to a conversation it takes part in. The conversation must exist.
pub async fn add_participant<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, AppError> {
    caller.chats()?;
    check_id("id", &id)?;
    let user = parse_participant(&body)?;
    let who = &caller.who;
    s.limits().admit_message(&who.tenant, &who.user)?;
    let key = who.key(&id);
    may_act_on(&*s, &caller, &key, &id).await?;
    accepting(&*s)?;
    let record = meshchat_wire::ParticipantAdded {
        v: SCHEMA_VERSION,
        id: format!("par-{}", uuid::Uuid::now_v7().simple()),
        conversation_id: id.clone(),
        tenant: who.tenant.clone(),
        user_id: user.clone(),
        added_by: who.user.clone(),
        timestamp: OffsetDateTime::now_utc(),
    };
    store(&*s, ChatRecord::ParticipantAdded(record), "the change").await?;
    s.joined(&key, &user);
    Ok(Json(json!({"conversationId": id, "userId": user, "addedBy": who.user})).into_response())
}

/// Stops the reply being generated in a conversation: a cancel request goes to its log, and
/// the owner (whichever worker it is, also during a move) stops the answer and writes the
/// text so far as the reply, marked `cancelled`. 202 whether or not a reply was under way.
pub async fn cancel<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    acting_on(&*s, &caller, &id).await?;
    let who = &caller.who;
    let record = meshchat_wire::CancelRequest {
        v: SCHEMA_VERSION,
        id: format!("cnc-{}", uuid::Uuid::now_v7().simple()),
        conversation_id: id.clone(),
        tenant: who.tenant.clone(),
        requested_by: who.user.clone(),
        timestamp: OffsetDateTime::now_utc(),
    };
    let cancel_id = record.id.clone();
    store(&*s, ChatRecord::CancelRequest(record), "the cancel request").await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "Cancel requested", "conversationId": id, "requestId": cancel_id})),
    )
        .into_response())
}

/// Erases a conversation for its tenant (its admin, or a `user` taking part): a deletion
/// record goes to its log; its owner forgets it, and tombstones its snapshot and index entry.
/// 200 once it is served no more (the owner read the deletion), 202 if that takes longer.
pub async fn delete<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let key = acting_on(&*s, &caller, &id).await?;
    let who = &caller.who;
    let record = meshchat_wire::ConversationDeleted {
        v: SCHEMA_VERSION,
        id: format!("del-{}", uuid::Uuid::now_v7().simple()),
        conversation_id: id.clone(),
        tenant: who.tenant.clone(),
        deleted_by: who.user.clone(),
        timestamp: OffsetDateTime::now_utc(),
    };
    store(&*s, ChatRecord::ConversationDeleted(record), "the deletion").await?;
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Err(AppError::NotFound(_)) = read(&*s, &key, &id).await {
            return Ok(
                Json(json!({"message": "Conversation deleted", "conversationId": id})).into_response(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "Deletion recorded; it applies when the conversation's owner reads it", "conversationId": id})),
    )
        .into_response())
}

/// How long a deletion waits for the conversation's owner to apply it.
const DELETE_WAIT: Duration = Duration::from_secs(10);

/// The key of conversation `id` once the caller may change it: it chats, is within its
/// message rate, may act on the conversation, and the worker takes writes.
async fn acting_on<S: ChatService>(s: &S, caller: &Caller, id: &str) -> Result<String, AppError> {
    caller.chats()?;
    check_id("id", id)?;
    let who = &caller.who;
    s.limits().admit_message(&who.tenant, &who.user)?;
    let key = who.key(id);
    may_act_on(s, caller, &key, id).await?;
    accepting(s)?;
    Ok(key)
}

/// An existing conversation of the caller's tenant that the caller may act on: its admin any,
/// a `user` one it takes part in; anything else is not found.
async fn may_act_on<S: ChatService>(s: &S, caller: &Caller, key: &str, id: &str) -> Result<(), AppError> {
    match membership_of(s, key, &caller.who.user).await? {
        Membership::Missing => Err(not_found(id)),
        Membership::Stranger if caller.who.role == Role::User => Err(not_found(id)),
        _ => Ok(()),
    }
}

/// Appends `record` to its conversation's log; a 503 naming `what` when Kafka does not take
/// it in time.
async fn store<S: ChatService>(s: &S, record: ChatRecord, what: &str) -> Result<(), AppError> {
    match tokio::time::timeout(SEND_TIMEOUT, s.append_record(record)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Unavailable(format!("Kafka did not accept {what}: {e}"))),
        Err(_) => Err(AppError::Unavailable(format!(
            "Kafka did not acknowledge {what} in time"
        ))),
    }
}

/// Refuses a `user` posting to (or watching) a conversation of its tenant that exists and that
/// it does not take part in — as not found, so nobody learns which ids others use.
pub(super) async fn may_take_part<S: ChatService>(
    s: &S,
    key: &str,
    user: &str,
    id: &str,
) -> Result<Membership, AppError> {
    match membership_of(s, key, user).await? {
        Membership::Stranger => Err(not_found(id)),
        m => Ok(m),
    }
}

/// [`ChatService::membership`], its failure as a 503.
pub(super) async fn membership_of<S: ChatService>(
    s: &S,
    key: &str,
    user: &str,
) -> Result<Membership, AppError> {
    s.membership(key, user)
        .await
        .map_err(|e| AppError::Unavailable(format!("could not check the conversation's participants: {e}")))
}

/// Refuses new records while this worker drains.
fn accepting<S: ChatService>(s: &S) -> Result<(), AppError> {
    let ready = s.readiness();
    if ready.draining {
        return Err(AppError::Unavailable(
            "this worker is shutting down; send to another".into(),
        ));
    }
    if !ready.kafka {
        // known now, not after the send's timeout: nothing is queued that could land later
        return Err(AppError::Unavailable(
            "Kafka is unreachable; nothing was stored, retry later".into(),
        ));
    }
    Ok(())
}

/// An `Idempotency-Key` header's value: 1 to 255 visible ASCII characters.
fn parse_idempotency_key(raw: &[u8]) -> Result<&str, FieldError> {
    let ok = (1..=255).contains(&raw.len()) && raw.iter().all(|b| (0x21..=0x7e).contains(b));
    match std::str::from_utf8(raw) {
        Ok(key) if ok => Ok(key),
        _ => Err(FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// The message id a send to `conversation` of `tenant` with idempotency key `key` gets: the
/// same on every worker. The conversation is part of it, so ids stay unique in the mesh even
/// when a client reuses a key for another conversation.
pub fn keyed_message_id(tenant: &str, conversation: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update([0x1f])
        .chain_update(conversation.as_bytes())
        .chain_update([0x1f])
        .chain_update(key.as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEYED_ID_PREFIX}{hex}")
}

/// Serves a conversation: from memory when this worker owns its partition, else from the
/// owner's internal listener (which never forwards again), else from the log itself. The answer
/// is the same either way. A `user` sees only conversations it takes part in.
pub async fn conversation<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    caller.chats()?;
    check_id("id", &id)?;
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let page = page_of(&query)?;
    let who = &caller.who;
    s.limits().admit_read(&who.tenant, &who.user)?;
    let key = who.key(&id);
    let view = read(&*s, &key, &id).await?;
    if who.role == Role::User && !view.participants.contains(&who.user) {
        return Err(not_found(&id));
    }
    let Some((before, limit)) = page else {
        return Ok(Json(view).into_response());
    };
    match view.page(before.as_deref(), limit) {
        Some(p) => return Ok(Json(p).into_response()),
        None if !view.has_more => {
            return Err(FieldError::new("before", "no message with this id in the conversation").into());
        }
        None => {}
    }
    // older than any worker holds: the whole history from the log
    let whole = s
        .read_history(&key)
        .await
        .map_err(|e| AppError::Unavailable(format!("could not read the log: {e}")))?
        .ok_or_else(|| not_found(&id))?;
    whole
        .page(before.as_deref(), limit)
        .map(|p| Json(p).into_response())
        .ok_or_else(|| FieldError::new("before", "no message with this id in the conversation").into())
}

/// Most messages one page holds, and how many when `limit` is not given.
const PAGE_MAX: usize = 100;
const PAGE_DEFAULT: usize = 50;

/// `?before=<messageId>&limit=<1..100>`: a page of the history, or `None` for the whole view.
fn page_of(query: &HashMap<String, String>) -> Result<Option<(Option<String>, usize)>, FieldError> {
    let before = query.get("before").cloned();
    let limit = query.get("limit");
    if before.is_none() && limit.is_none() {
        return Ok(None);
    }
    if let Some(b) = &before {
        check_id("before", b)?;
    }
    Ok(Some((
        before,
        parse_limit(limit.map(String::as_str), PAGE_DEFAULT, PAGE_MAX)?,
    )))
}

pub(super) async fn read<S: ChatService>(s: &S, key: &str, id: &str) -> Result<ConversationView, AppError> {
    s.wake(key).await;
    match s.local_conversation(key) {
        Local::Found(view) => return Ok(view),
        Local::Missing => return Err(not_found(id)),
        Local::NotHere => {}
    }
    if let Some(owner) = s.owner_of(key)
        && owner.node_id != s.settings().node_id
        && let Some(url) = owner.internal_url
    {
        match s.forward_read(&url, key).await {
            Ok(f) if f.status == StatusCode::OK.as_u16() => match serde_json::from_slice(&f.body) {
                Ok(view) => return Ok(view),
                Err(e) => {
                    tracing::warn!(owner = %owner.node_id, error = %e, "owner's answer is not a conversation; reading the log")
                }
            },
            Ok(f) if f.status == StatusCode::NOT_FOUND.as_u16() => return Err(not_found(id)),
            Ok(f) => {
                tracing::warn!(owner = %owner.node_id, status = f.status, "owner could not serve; reading the log")
            }
            Err(e) => {
                tracing::warn!(owner = %owner.node_id, error = %e, "owner unreachable; reading the log")
            }
        }
    }
    s.read_log(key)
        .await
        .map_err(|e| AppError::Unavailable(format!("could not read the log: {e}")))?
        .ok_or_else(|| not_found(id))
}

pub(super) fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("conversation {id:?} not found"))
}
