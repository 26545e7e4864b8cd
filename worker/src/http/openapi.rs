//! The public API as an OpenAPI 3.1 document (utoipa), served at `GET /api/openapi.json` and
//! checked in as `docs/openapi.json` (a unit test keeps the two equal; `make openapi` rewrites
//! it). The operations below are documentation only: the handlers are in `chat.rs`,
//! `agent.rs`, `ticket.rs`, `stream.rs` and `openai.rs`; schemathesis (`tests/tests/openapi.rs`) checks the
//! running worker against this document.

#![allow(dead_code)] // the shapes and operations exist for the document

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::view::{ConversationList, ConversationSummary, ConversationView, MessageView};

/// The document, built once.
pub static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
});

/// `POST /api/chat/send`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendBody {
    /// The conversation (created by its first message).
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "conv-123")]
    pub conversation_id: String,
    /// The text, at most `--max-content-bytes` (32 KiB) of UTF-8, not blank.
    #[schema(
        min_length = 1,
        max_length = 32768,
        pattern = r"\S",
        example = "Hello, how are you?"
    )]
    pub content: String,
    /// Ignored: the sender is the caller (read only with `--auth none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The client's time (RFC 3339); the worker's when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
}

/// A message accepted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendResponse {
    /// `Message sent`.
    pub message: String,
    /// Its id (the same for a retry with the same `Idempotency-Key`).
    pub message_id: String,
    /// When it was accepted (RFC 3339).
    pub timestamp: String,
}

/// Every error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// `invalid_request`, `too_large`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `rate_limited`, `unavailable`, `not_implemented`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault (bad input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `rate_limited`: seconds until a retry can succeed (also the `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// Why a message got an error reply.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplyErrorDoc {
    /// `timeout`, `upstream`, `unavailable`, `rejected`, `limit`, `notStored`, `quota` (others
    /// may come).
    pub kind: String,
    /// A short reason for chat users.
    pub message: String,
    /// LLM attempts made.
    pub attempts: u32,
}

/// `POST /api/chat/conversation/{id}/participants`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantBody {
    /// The user to add.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "bob")]
    pub user_id: String,
}

/// A participant added.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantResponse {
    /// The conversation.
    pub conversation_id: String,
    /// Who was added.
    pub user_id: String,
    /// Who added them.
    pub added_by: String,
}

/// `POST /api/agent/migrate`: one of `conversationId` or `partitions`, or neither (all of the
/// source's partitions).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrateBodyDoc {
    /// The worker to move to.
    pub target_node: String,
    /// Move this conversation's partition (admins: their tenant's conversations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Move these partitions (the operator role).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<i32>>,
}

/// A migration requested (the balancer carries it out, or refuses it: see `/api/mesh`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrateResponse {
    /// `Migration started`.
    pub message: String,
    /// The request's id.
    pub request_id: String,
    /// From.
    pub source_node: String,
    /// To.
    pub target_node: String,
    /// What moves.
    pub partitions: Vec<i32>,
    /// A move's time as measured here, e.g. `120ms`.
    pub estimated_time: String,
}

/// A ticket for live streams (`?ticket=`), for browsers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketResponse {
    /// The ticket.
    pub ticket: String,
    /// Seconds it is valid.
    pub expires_in: u64,
    /// The caller's tenant.
    pub tenant: String,
    /// The caller.
    pub user: String,
    /// `user`, `admin` or `operator`.
    pub role: String,
}

/// This worker's health and load.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    /// The worker.
    pub node_id: String,
    /// `healthy`, `starting`, `degraded` or `draining`.
    pub status: String,
    /// Load, 0 to 1.
    pub load_factor: f64,
    /// Conversations with a message waiting or being answered.
    pub active_conversations: u64,
    /// Conversations in memory.
    pub resident_conversations: u64,
    /// Conversations of its partitions evicted from memory.
    pub evicted_conversations: u64,
    /// Messages a second, smoothed.
    pub messages_per_second: f64,
    /// Uptime in words.
    pub uptime: String,
    /// Uptime in seconds.
    pub uptime_seconds: u64,
    /// Partitions held.
    pub owned_partitions: Vec<i32>,
    /// Epoch per held partition.
    pub epochs: BTreeMap<String, u64>,
    /// Held partitions not live yet (moving in or out).
    pub handoffs: Vec<i32>,
    /// Phase per held partition.
    pub phases: BTreeMap<String, String>,
    /// Assignment generation.
    pub generation: u64,
    /// `static` or `dynamic`.
    pub ownership: String,
    /// LLM calls running.
    pub in_flight: u64,
    /// Answers waiting for an LLM slot.
    pub queued: u64,
    /// LLM slots.
    pub concurrency_limit: u64,
    /// Draining.
    pub draining: bool,
    /// `required` or `none`.
    pub auth: String,
    /// Configuration warnings.
    pub warnings: Vec<String>,
}

/// One partition's owner.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOwnerDoc {
    /// The partition.
    pub partition: i32,
    /// Its owner.
    pub owner: String,
    /// Ownership epoch.
    pub epoch: u64,
}

/// The mesh as a worker sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshDoc {
    /// The ChatAgent (`namespace/name`).
    pub agent: String,
    /// `static` or `dynamic`.
    pub ownership: String,
    /// Assignment generation.
    pub generation: u64,
    /// Owner per partition.
    pub partitions: Vec<PartitionOwnerDoc>,
    /// A worker is dead after this long without a heartbeat.
    pub heartbeat_timeout_ms: u64,
    /// Workers with their load and partitions.
    pub workers: Vec<serde_json::Value>,
    /// Recent handoff steps.
    pub recent_moves: Vec<serde_json::Value>,
    /// The same steps gathered per move (partition, epoch, from, to, reason, startedAt,
    /// liveAt, pauseMs, replayed, state: moving, done or superseded), oldest first.
    pub moves: Vec<serde_json::Value>,
    /// Migrate requests the balancer refused.
    pub refused_migrations: Vec<serde_json::Value>,
}

/// Chat.
#[utoipa::path(post, path = "/api/chat/send", tag = "chat",
    request_body = SendBody,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1–255 visible ASCII characters: a retry with the same key (same conversation, within 24 h) gets the first send's messageId and stores nothing new")),
    responses(
        (status = 200, description = "Accepted: written to the log", body = SendResponse),
        (status = 400, description = "Bad input, naming the field", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not chat", body = ErrorBody),
        (status = 404, description = "Another user's conversation", body = ErrorBody),
        (status = 413, description = "Content or body too large", body = ErrorBody),
        (status = 429, description = "Over a rate limit (Retry-After)", body = ErrorBody),
        (status = 503, description = "Kafka away, the worker draining or at its request limit, or the conversation's worker too far behind (Retry-After); nothing stored", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn send() {}

/// The caller's conversations, most recent first, from the conversation index every worker
/// keeps: a user's own (those it takes part in), an admin's whole tenant. A conversation shows
/// about a second after its latest message.
#[utoipa::path(get, path = "/api/chat/conversations", tag = "chat",
    params(
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Most conversations in the page (default 20)"),
    ),
    responses(
        (status = 200, description = "A page of the list", body = ConversationList),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not chat", body = ErrorBody),
        (status = 429, description = "Over the read limit", body = ErrorBody),
        (status = 503, description = "The index is still being read (a worker that just started)", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn conversations() {}

/// A conversation: participants and the history its owner holds (`hasMore`: older messages
/// exist). With `limit` or `before`, a page of the history: the `limit` messages just before
/// message `before` (the newest without it), oldest first; the whole history stays readable
/// this way as long as `chat.messages` keeps it.
#[utoipa::path(get, path = "/api/chat/conversation/{id}", tag = "chat",
    params(
        ("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "conv-123", description = "The conversation"),
        ("before" = Option<String>, Query, pattern = r"^[A-Za-z0-9._:-]{1,128}$", description = "A message id: the page ends just before it"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Most messages in the page (default 50)"),
    ),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        (status = 400, description = "Bad id, limit or before (no such message)", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not read conversations", body = ErrorBody),
        (status = 404, description = "No such conversation for the caller", body = ErrorBody),
        (status = 429, description = "Over the read limit", body = ErrorBody),
        (status = 503, description = "Neither the owner nor the log answered", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn conversation() {}

/// Erases a conversation for its tenant (its admin, or a participant): it is served no more —
/// not read, listed, paged, resumed or answered; its snapshot and index entry get tombstones.
/// Its records stay in `chat.messages` (and tokens in `chat.stream`) until retention removes
/// them (docs/architecture.md, "Deleting a conversation"). The same id may start a new one.
#[utoipa::path(delete, path = "/api/chat/conversation/{id}", tag = "chat",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "conv-123", description = "The conversation")),
    responses(
        (status = 200, description = "Deleted: served no more", body = DeleteResponse),
        (status = 202, description = "Recorded; its owner has not applied it yet", body = DeleteResponse),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not chat", body = ErrorBody),
        (status = 404, description = "No such conversation for the caller", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 503, description = "Kafka away or worker draining", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn delete_conversation() {}

/// Adds a user to a conversation (its admin; or a participant).
#[utoipa::path(post, path = "/api/chat/conversation/{id}/participants", tag = "chat",
    request_body = ParticipantBody,
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "conv-123", description = "The conversation")),
    responses(
        (status = 200, description = "Added", body = ParticipantResponse),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not", body = ErrorBody),
        (status = 404, description = "No such conversation for the caller", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 503, description = "Kafka away or worker draining", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn participants() {}

/// `DELETE /api/chat/conversation/{id}` answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResponse {
    /// `Conversation deleted`, or (202) that the deletion is recorded.
    pub message: String,
    /// The conversation.
    pub conversation_id: String,
}

/// `POST /api/chat/conversation/{id}/cancel` answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    /// `Cancel requested`.
    pub message: String,
    /// The conversation.
    pub conversation_id: String,
    /// The request's id.
    pub request_id: String,
}

/// Stops the reply being generated (from any worker): its text so far becomes the reply,
/// marked `cancelled`; the conversation's next message is answered. 202 whether or not a reply
/// was under way.
#[utoipa::path(post, path = "/api/chat/conversation/{id}/cancel", tag = "chat",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "conv-123", description = "The conversation")),
    responses(
        (status = 202, description = "Requested: written to the log", body = CancelResponse),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not chat", body = ErrorBody),
        (status = 404, description = "No such conversation for the caller", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 503, description = "Kafka away or worker draining", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn cancel() {}

/// Live events of a conversation as server-sent events (`message`, `token`, `reply`,
/// `presence`; `?presence` shows the caller online). Each event's `id:` (also `id` in its JSON)
/// is the client's position; reconnecting to any worker with it as `Last-Event-ID` (or
/// `?after=`) sends exactly the events after it. Keep-alives are comment lines.
#[utoipa::path(get, path = "/api/chat/conversation/{id}/events", tag = "chat",
    params(
        ("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", example = "conv-123", description = "The conversation"),
        ("ticket" = Option<String>, Query, description = "A ticket from POST /api/auth/ticket, instead of the header"),
        ("Last-Event-ID" = Option<String>, Header, pattern = r"^[0-9]{1,18}\.[0-9]{1,18}\.[0-9]{1,18}$", example = "120.4511.33", description = "Resume after this event id"),
        ("after" = Option<String>, Query, pattern = r"^[0-9]{1,18}\.[0-9]{1,18}\.[0-9]{1,18}$", description = "Resume after this event id (when the header cannot be set)"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not", body = ErrorBody),
        (status = 404, description = "Another user's conversation", body = ErrorBody),
        (status = 429, description = "Over the read or stream limit", body = ErrorBody),
        (status = 503, description = "Membership could not be checked", body = ErrorBody),
    ))]
fn events() {}

/// Live events of a conversation over a WebSocket (JSON text frames, each with its `id`);
/// clients send nothing but pings (a message over 64 KiB closes the socket). Reconnecting to
/// any worker with `?after=<id>` sends exactly the events after it.
#[utoipa::path(get, path = "/api/chat/ws", tag = "chat",
    params(
        ("conversationId" = String, Query, pattern = r"^[A-Za-z0-9._:-]{1,128}$", description = "The conversation"),
        ("after" = Option<String>, Query, pattern = r"^[0-9]{1,18}\.[0-9]{1,18}\.[0-9]{1,18}$", example = "120.4511.33", description = "Resume after this event id"),
        ("ticket" = Option<String>, Query, description = "A ticket, instead of the header or the `meshchat.bearer.<token>` subprotocol"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket"),
        (status = 400, description = "Bad input or not a WebSocket handshake", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not", body = ErrorBody),
        (status = 404, description = "Another user's conversation", body = ErrorBody),
        (status = 429, description = "Over the read or stream limit", body = ErrorBody),
        (status = 503, description = "Membership could not be checked", body = ErrorBody),
    ))]
fn websocket() {}

/// This worker's health and load.
#[utoipa::path(get, path = "/api/agent/status", tag = "mesh",
    responses(
        (status = 200, description = "Status", body = StatusDoc),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn status() {}

/// Asks the balancer to move a conversation's partition (admins) or partitions (the operator).
#[utoipa::path(post, path = "/api/agent/migrate", tag = "mesh",
    request_body = MigrateBodyDoc,
    responses(
        (status = 200, description = "Requested", body = MigrateResponse),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not", body = ErrorBody),
        (status = 404, description = "No such conversation for the caller", body = ErrorBody),
        (status = 409, description = "Conflicts with the mesh (target dead or draining, nothing to move)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Over the tenant's migrate limit", body = ErrorBody),
        (status = 501, description = "Static ownership: nothing moves", body = ErrorBody),
        (status = 503, description = "Kafka away or worker draining", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn migrate() {}

/// The whole mesh (admins and the operator).
#[utoipa::path(get, path = "/api/mesh", tag = "mesh",
    responses(
        (status = 200, description = "The mesh", body = MeshDoc),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "The role may not", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn mesh() {}

/// A worker serving clients, by its public URL.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointDoc {
    /// Worker id.
    pub node_id: String,
    /// Base URL clients reach it on.
    pub url: String,
}

/// The mesh's workers that serve clients now.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsDoc {
    /// Alive, not draining workers.
    pub endpoints: Vec<EndpointDoc>,
}

/// Where a client (the web pages) can go on when its worker is gone (any signed-in caller).
#[utoipa::path(get, path = "/api/endpoints", tag = "mesh",
    responses(
        (status = 200, description = "The workers serving clients", body = EndpointsDoc),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 503, description = "The worker is at its request limit", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn endpoints() {}

/// A 60 s ticket for the caller's live streams (browsers cannot set headers on WebSocket or
/// EventSource).
#[utoipa::path(post, path = "/api/auth/ticket", tag = "auth",
    responses(
        (status = 200, description = "A ticket", body = TicketResponse),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 503, description = "No mesh secret to sign with", body = ErrorBody),
        (status = 504, description = "Took too long"),
    ))]
fn ticket() {}

/// This document (no credential needed).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
fn openapi() {}

/// `POST /v1/chat/completions`, as OpenAI's clients send it. Only the last message (a user's)
/// is new: MeshChat keeps the conversation. Sampling settings are the ChatAgent's and ignored;
/// `n` > 1 and tools are refused.
#[derive(Serialize, ToSchema)]
pub struct CompletionBody {
    /// The ChatAgent's name, as `GET /v1/models` lists it.
    #[schema(example = "meshchat")]
    pub model: String,
    /// The client's messages; the last one must be the user's new message (a string, or text
    /// parts).
    pub messages: Vec<CompletionMessage>,
    /// Answer as server-sent `chat.completion.chunk` events ending with `data: [DONE]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Names the conversation when `X-MeshChat-Conversation` does not: one per user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One message of a completion request.
#[derive(Serialize, ToSchema)]
pub struct CompletionMessage {
    /// `system`, `user`, `assistant`; the last one must be `user`.
    #[schema(example = "user")]
    pub role: String,
    /// The text.
    #[schema(example = "Where is my order?")]
    pub content: String,
}

/// OpenAI's `chat.completion` (not streamed).
#[derive(Serialize, ToSchema)]
pub struct ChatCompletionDoc {
    /// `chatcmpl-` and the stored user message's id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model.
    pub model: String,
    /// One choice: `{index, message: {role: assistant, content}, finish_reason: stop}`.
    pub choices: Vec<serde_json::Value>,
    /// Not reported: `null`.
    pub usage: Option<serde_json::Value>,
}

/// OpenAI's error shape, on the `/v1` routes.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDoc {
    /// `{message, type, param, code}`; `param` names the field at fault.
    pub error: serde_json::Value,
}

/// OpenAI's model list: the one model this mesh serves.
#[derive(Serialize, ToSchema)]
pub struct ModelListDoc {
    /// `list`.
    pub object: String,
    /// `{id, object: model, created, owned_by: meshchat}`.
    pub data: Vec<serde_json::Value>,
}

/// OpenAI-compatible chat completion: the last message is stored and answered as by
/// `POST /api/chat/send`, and the answer returned whole or streamed as OpenAI chunks.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = CompletionBody,
    params(
        ("X-MeshChat-Conversation" = Option<String>, Header, description = "The conversation to continue (else derived from the body's `user`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "As for /api/chat/send: a retry stores nothing new and returns the same answer"),
    ),
    responses(
        (status = 200, description = "The answer: a chat.completion, or with `stream` server-sent chunks ending with [DONE]",
            content((ChatCompletionDoc = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Bad input, naming the field in error.param", body = OpenAiErrorDoc),
        (status = 401, description = "No valid credential", body = OpenAiErrorDoc),
        (status = 403, description = "The role may not chat", body = OpenAiErrorDoc),
        (status = 404, description = "Unknown model, or another user's conversation", body = OpenAiErrorDoc),
        (status = 413, description = "Message or body too large", body = OpenAiErrorDoc),
        (status = 429, description = "Over a rate limit or the stream caps (Retry-After)", body = OpenAiErrorDoc),
        (status = 502, description = "The LLM could not answer: the stored error reply", body = OpenAiErrorDoc),
        (status = 503, description = "Kafka away or the worker draining; nothing stored", body = OpenAiErrorDoc),
        (status = 504, description = "No reply within 600 s; it will be stored in the conversation", body = OpenAiErrorDoc),
    ))]
fn completions() {}

/// The model this mesh serves: its ChatAgent.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, description = "One model", body = ModelListDoc),
        (status = 401, description = "No valid credential", body = OpenAiErrorDoc),
        (status = 403, description = "The role may not chat", body = OpenAiErrorDoc),
        (status = 504, description = "Took too long"),
    ))]
fn models() {}

/// One model.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, example = "meshchat", description = "The model id")),
    responses(
        (status = 200, description = "The model", body = serde_json::Value),
        (status = 401, description = "No valid credential", body = OpenAiErrorDoc),
        (status = 403, description = "The role may not chat", body = OpenAiErrorDoc),
        (status = 404, description = "Not this mesh's model", body = OpenAiErrorDoc),
        (status = 504, description = "Took too long"),
    ))]
fn model() {}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key or a JWT of the identity provider (docs/security.md)",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "MeshChat", description = "Chat for LLM agents over a Kafka mesh: the public API of every worker (docs/security.md: identities, tenants, limits)."),
    paths(send, conversations, conversation, delete_conversation, participants, cancel, events, websocket, status, migrate, mesh, endpoints, ticket, openapi, completions, models, model),
    components(schemas(CancelResponse, DeleteResponse, CompletionBody, CompletionMessage, ChatCompletionDoc, OpenAiErrorDoc, ModelListDoc, SendBody, SendResponse, ErrorBody, ReplyErrorDoc, ConversationView, ConversationList, ConversationSummary, MessageView, ParticipantBody, ParticipantResponse, MigrateBodyDoc, MigrateResponse, TicketResponse, StatusDoc, MeshDoc, PartitionOwnerDoc, EndpointsDoc, EndpointDoc)),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
struct ApiDoc;

#[cfg(test)]
mod tests {
    /// The checked-in document is the one the worker serves (`make openapi` rewrites it).
    #[test]
    fn the_checked_in_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("MESHCHAT_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, format!("{}\n", *super::DOCUMENT)).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(&path).expect("docs/openapi.json");
        assert_eq!(
            checked_in.trim_end(),
            super::DOCUMENT.as_str(),
            "docs/openapi.json is stale: run `make openapi`"
        );
        let doc: serde_json::Value = serde_json::from_str(&checked_in).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/chat/send"]["post"].is_object());
    }
}
