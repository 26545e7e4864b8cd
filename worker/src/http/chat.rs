//! `POST /api/chat/send` and `GET /api/chat/conversation/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshchat_wire::{SCHEMA_VERSION, UserMessage};
use serde_json::json;
use time::OffsetDateTime;

use super::error::{AppError, Body};
use super::{ChatService, FORWARDED, Local};
use crate::validate::{check_id, parse_send};

/// How long a send waits for the broker's acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts a user message: validates it, writes it to `chat.messages` and answers once the
/// broker has acknowledged it. Any worker accepts any conversation.
pub async fn send<S: ChatService>(State(s): State<Arc<S>>, Body(body): Body) -> Result<Response, AppError> {
    let req = parse_send(&body, s.settings().max_content_bytes)?;
    if s.readiness().draining {
        return Err(AppError::Unavailable(
            "this worker is shutting down; send to another".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let message = UserMessage {
        v: SCHEMA_VERSION,
        id: format!("msg-{}", uuid::Uuid::now_v7().simple()),
        conversation_id: req.conversation_id,
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        user_id: req.user_id,
        content: req.content,
        timestamp: req.timestamp.unwrap_or(now),
        accepted_by: s.settings().node_id.clone(),
        accepted_at: Some(now),
    };
    let id = message.id.clone();
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
    let timestamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Json(json!({"message": "Message sent", "messageId": id, "timestamp": timestamp})).into_response())
}

/// Serves a conversation: from memory when this worker owns its partition, else from the
/// owner (forwarded once), else from the log itself. The answer is the same either way.
pub async fn conversation<S: ChatService>(
    State(s): State<Arc<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    check_id("id", &id)?;
    match s.local_conversation(&id) {
        Local::Found(view) => return Ok(Json(view).into_response()),
        Local::Missing => return Err(not_found(&id)),
        Local::NotHere => {}
    }
    if !headers.contains_key(FORWARDED)
        && let Some(owner) = s.owner_of(&id)
        && owner.node_id != s.settings().node_id
    {
        match s.forward_read(&owner.url, &id).await {
            Ok(f) if f.status == StatusCode::OK.as_u16() || f.status == StatusCode::NOT_FOUND.as_u16() => {
                let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK);
                return Ok((status, [(header::CONTENT_TYPE, "application/json")], f.body).into_response());
            }
            Ok(f) => {
                tracing::warn!(owner = %owner.node_id, status = f.status, "owner could not serve; reading the log")
            }
            Err(e) => {
                tracing::warn!(owner = %owner.node_id, error = %e, "owner unreachable; reading the log")
            }
        }
    }
    let view = s
        .read_log(&id)
        .await
        .map_err(|e| AppError::Unavailable(format!("could not read the log: {e}")))?;
    let view = view.ok_or_else(|| not_found(&id))?;
    Ok(Json(view).into_response())
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("conversation {id:?} not found"))
}
