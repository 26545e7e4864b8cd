//! `POST /api/chat/send` and `GET /api/chat/conversation/{id}`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshchat_crds::{ChatRecord, SCHEMA_VERSION, UserMessage, encode, partition_for};
use serde_json::json;
use time::OffsetDateTime;

use super::FORWARDED;
use super::error::{AppError, Body};
use crate::kafka::read_conversation;
use crate::state::AppState;
use crate::store::Conversation;
use crate::validate::{check_id, parse_send};
use crate::view::{ConversationView, MessageView};

/// How long a send waits for the broker's acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts a user message: validates it, writes it to `chat.messages` and answers once the
/// broker has acknowledged it. Any worker accepts any conversation.
pub async fn send(State(state): State<AppState>, Body(body): Body) -> Result<Response, AppError> {
    let s = &state.0;
    let req = parse_send(&body, s.config.max_content_bytes)?;
    if s.draining.load(Ordering::Relaxed) {
        return Err(AppError::Unavailable(
            "this worker is shutting down; send to another".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let message = UserMessage {
        v: SCHEMA_VERSION,
        id: format!("msg-{}", uuid::Uuid::now_v7().simple()),
        conversation_id: req.conversation_id,
        user_id: req.user_id,
        content: req.content,
        timestamp: req.timestamp.unwrap_or(now),
        accepted_by: s.config.node_id.clone(),
        accepted_at: Some(now),
    };
    let partition = partition_for(&message.conversation_id, s.partitions);
    let bytes = encode(&ChatRecord::UserMessage(message.clone()))
        .map_err(|e| AppError::Unavailable(format!("could not encode the message: {e}")))?;
    let write = s
        .producer
        .send(&s.topics.messages, partition, &message.conversation_id, &bytes);
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(_offset)) => {}
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
    s.metrics.messages_in.inc();
    let timestamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(
        Json(json!({"message": "Message sent", "messageId": message.id, "timestamp": timestamp}))
            .into_response(),
    )
}

/// Serves a conversation: from memory when this worker owns its partition, else from the
/// owner (forwarded once), else from the log itself. The answer is the same either way.
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let s = &state.0;
    check_id("id", &id)?;
    let p = partition_for(&id, s.partitions);
    if s.held.is_live(p) {
        let store = s.store.read().unwrap_or_else(|p| p.into_inner());
        let conv = store.get(&id).ok_or_else(|| not_found(&id))?;
        return Ok(Json(view(conv, &s.config.agent_name)).into_response());
    }
    if !headers.contains_key(FORWARDED)
        && let Some(owner) = s.ownership.owner_of(p)
        && owner.node_id != s.config.node_id
    {
        let url = format!("{}/api/chat/conversation/{id}", owner.url);
        let forwarded = s.http.get(&url).header(FORWARDED, &s.config.node_id).send().await;
        match forwarded {
            Ok(resp) if resp.status() == StatusCode::OK || resp.status() == StatusCode::NOT_FOUND => {
                let status = resp.status();
                let body = resp.bytes().await.unwrap_or_default();
                return Ok((
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response());
            }
            Ok(resp) => {
                tracing::warn!(owner = %owner.node_id, status = %resp.status(), "owner could not serve; reading the log")
            }
            Err(e) => {
                tracing::warn!(owner = %owner.node_id, error = %e, "owner unreachable; reading the log")
            }
        }
    }
    let (kafka, topics, partitions) = (s.kafka.clone(), s.topics.clone(), s.partitions);
    let (limit, tokenizer, lookup) = (s.config.history_limit, s.tokenizer.clone(), id.clone());
    let conv = tokio::task::spawn_blocking(move || {
        read_conversation(&kafka, &topics, partitions, &lookup, limit, |t| {
            tokenizer.count(t)
        })
    })
    .await
    .map_err(|_| AppError::Unavailable("log read failed".into()))?
    .map_err(|e| AppError::Unavailable(format!("could not read the log: {e}")))?;
    let conv = conv.ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&conv, &s.config.agent_name)).into_response())
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("conversation {id:?} not found"))
}

/// The client view of a conversation.
pub fn view(conv: &Conversation, agent_name: &str) -> ConversationView {
    let mut participants = conv.participants.clone();
    let mut agent_seen = false;
    for e in &conv.entries {
        if let ChatRecord::AgentReply(r) = &e.record {
            agent_seen = true;
            if !participants.contains(&r.sender) {
                participants.push(r.sender.clone());
            }
        }
    }
    // replies evicted from the retained window still make the agent a participant
    if conv.agent_replied && !agent_seen && !participants.iter().any(|p| p == agent_name) {
        participants.push(agent_name.to_string());
    }
    ConversationView {
        id: conv.id.clone(),
        participants,
        messages: conv
            .entries
            .iter()
            .map(|e| MessageView::from(&e.record))
            .collect(),
    }
}
