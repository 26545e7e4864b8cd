//! Conversation records: the log of `chat.messages`, token chunks on `chat.stream`, presence on
//! `chat.users`, and snapshots on `chat.conversations`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Record, v1};
use crate::tenant::{conversation_key, default_tenant, is_default_tenant};

/// A record on `chat.messages`, the ordered log of one conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ChatRecord {
    /// A message a user sent.
    UserMessage(UserMessage),
    /// The agent's final reply (or an explicit error reply) to one user message.
    AgentReply(AgentReply),
    /// Written by a new owner into the partition it takes over: replies of older epochs that
    /// come after it in the log are void.
    EpochFence(EpochFence),
    /// A user added to a conversation (by its tenant's admin or one of its participants).
    ParticipantAdded(ParticipantAdded),
    /// Someone asked to stop the reply being generated: the earliest unanswered message before
    /// this record gets a reply with the text so far, marked cancelled.
    CancelRequest(CancelRequest),
    /// The conversation was erased: nothing of it before this record is served again (its
    /// snapshot and index entry get tombstones; the log keeps the records until retention).
    ConversationDeleted(ConversationDeleted),
}

impl Record for ChatRecord {
    fn version(&self) -> u16 {
        match self {
            ChatRecord::UserMessage(m) => m.v,
            ChatRecord::AgentReply(r) => r.v,
            ChatRecord::EpochFence(f) => f.v,
            ChatRecord::ParticipantAdded(p) => p.v,
            ChatRecord::CancelRequest(c) => c.v,
            ChatRecord::ConversationDeleted(d) => d.v,
        }
    }
}

impl ChatRecord {
    /// The record's Kafka key: its conversation within its tenant (see
    /// [`conversation_key`]); fences have their own key.
    pub fn key(&self) -> String {
        match self {
            ChatRecord::UserMessage(m) => m.key(),
            ChatRecord::AgentReply(r) => conversation_key(&r.tenant, &r.conversation_id),
            ChatRecord::EpochFence(_) => FENCE_KEY.to_string(),
            ChatRecord::ParticipantAdded(p) => conversation_key(&p.tenant, &p.conversation_id),
            ChatRecord::CancelRequest(c) => conversation_key(&c.tenant, &c.conversation_id),
            ChatRecord::ConversationDeleted(d) => conversation_key(&d.tenant, &d.conversation_id),
        }
    }

    /// The conversation this record belongs to, within its tenant; fences belong to none.
    pub fn conversation_id(&self) -> &str {
        match self {
            ChatRecord::UserMessage(m) => &m.conversation_id,
            ChatRecord::AgentReply(r) => &r.conversation_id,
            ChatRecord::EpochFence(_) => "",
            ChatRecord::ParticipantAdded(p) => &p.conversation_id,
            ChatRecord::CancelRequest(c) => &c.conversation_id,
            ChatRecord::ConversationDeleted(d) => &d.conversation_id,
        }
    }

    /// The record's message id (empty for fences).
    pub fn id(&self) -> &str {
        match self {
            ChatRecord::UserMessage(m) => &m.id,
            ChatRecord::AgentReply(r) => &r.id,
            ChatRecord::EpochFence(_) => "",
            ChatRecord::ParticipantAdded(p) => &p.id,
            ChatRecord::CancelRequest(c) => &c.id,
            ChatRecord::ConversationDeleted(d) => &d.id,
        }
    }
}

/// A message a user sent, as accepted by a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserMessage {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Message id, unique in the mesh.
    pub id: String,
    /// Conversation id (the Kafka key).
    pub conversation_id: String,
    /// Tenant the conversation belongs to (absent in records written before tenants, and for
    /// the default tenant: those read as [`crate::DEFAULT_TENANT`]).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The sending user.
    pub user_id: String,
    /// Message text.
    pub content: String,
    /// When the user sent it (client-supplied or acceptance time).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The worker that accepted the send.
    pub accepted_by: String,
    /// When that worker accepted it (server clock; `timestamp` may be the client's).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub accepted_at: Option<OffsetDateTime>,
}

impl UserMessage {
    /// Its Kafka key: the conversation within its tenant.
    pub fn key(&self) -> String {
        conversation_key(&self.tenant, &self.conversation_id)
    }
}

/// The final reply to one user message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReply {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Reply id.
    pub id: String,
    /// Conversation id (the Kafka key).
    pub conversation_id: String,
    /// Tenant the conversation belongs to (absent in records written before tenants, and for
    /// the default tenant: those read as [`crate::DEFAULT_TENANT`]).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The user message this answers.
    pub in_reply_to: String,
    /// The agent's name.
    pub sender: String,
    /// Reply text (empty for an error reply).
    pub content: String,
    /// When the reply was completed.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The worker that answered.
    pub node: String,
    /// Ownership epoch of the partition when the answer was produced (fencing token).
    pub epoch: u64,
    /// Set when the LLM could not answer: the reply is an explicit error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
    /// Completion tokens the reply used, as counted by the worker.
    #[serde(default)]
    pub completion_tokens: u32,
    /// LLM attempt that produced this reply (0 = first); streamed chunks of other attempts are void.
    #[serde(default)]
    pub attempt: u32,
    /// Number of `chat.stream` chunks that attempt produced, so live readers know when they have all.
    #[serde(default)]
    pub chunks: u32,
    /// Stopped on request (`CancelRequest`): `content` is the text so far.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// A user added to a conversation: from then on a `user` credential of that user may read,
/// watch and post to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantAdded {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Record id.
    pub id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Tenant (absent for the default tenant).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The user added.
    pub user_id: String,
    /// Who added them.
    pub added_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// A request to stop the reply being generated in a conversation (`POST
/// /api/chat/conversation/{id}/cancel`, any worker): the owner applies it in log order, so a
/// new owner replaying the log decides alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Record id.
    pub id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Tenant (absent for the default tenant).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// A conversation erased by its tenant's admin or a participant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDeleted {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Record id.
    pub id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Tenant (absent for the default tenant).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// Who asked.
    pub deleted_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// Kafka key of fence records; readers recognise fences by their type, never by key.
pub const FENCE_KEY: &str = "__meshchat.fence";

/// A new owner's mark in its partition of `chat.messages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochFence {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// The partition taken over.
    pub partition: i32,
    /// The new owner's epoch.
    pub epoch: u64,
    /// The new owner.
    pub owner: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// Why a reply is an error reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyError {
    /// Class of failure.
    pub kind: ReplyErrorKind,
    /// Human-readable cause (never secrets).
    pub message: String,
    /// LLM attempts made.
    pub attempts: u32,
}

/// Why a message got an error reply instead of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReplyErrorKind {
    /// No answer within the timeout.
    Timeout,
    /// The LLM answered with an error status.
    Upstream,
    /// The LLM could not be reached.
    Unavailable,
    /// The request itself was refused (4xx other than 429).
    Rejected,
    /// A conversation limit: too many unanswered messages, or participants.
    Limit,
    /// The answer could not be stored (larger than a record may be, or refused by the broker
    /// for good).
    NotStored,
    /// The tenant's LLM token quota was used up.
    Quota,
    /// A kind this version does not know (written by a newer worker): still an error reply.
    #[serde(other)]
    Other,
}

/// One piece of a reply streaming from the LLM, on `chat.stream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyChunk {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Conversation id (the Kafka key).
    pub conversation_id: String,
    /// Tenant the conversation belongs to (absent in records written before tenants, and for
    /// the default tenant: those read as [`crate::DEFAULT_TENANT`]).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The user message being answered.
    pub in_reply_to: String,
    /// Offset of that user message in `chat.messages`, so readers order chunks after it.
    pub user_offset: i64,
    /// Id the final reply will carry.
    pub reply_id: String,
    /// LLM attempt this chunk belongs to; a higher attempt restarts the reply text.
    #[serde(default)]
    pub attempt: u32,
    /// Chunk number within the attempt, from 0.
    pub seq: u32,
    /// Text of this chunk.
    pub delta: String,
    /// The answering worker.
    pub node: String,
    /// Ownership epoch of the partition.
    pub epoch: u64,
}

impl ReplyChunk {
    /// Its Kafka key: the conversation within its tenant.
    pub fn key(&self) -> String {
        conversation_key(&self.tenant, &self.conversation_id)
    }
}

impl Record for ReplyChunk {
    fn version(&self) -> u16 {
        self.v
    }
}

/// A user's presence change, on `chat.users`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Conversation id (the Kafka key).
    pub conversation_id: String,
    /// Tenant the conversation belongs to (absent in records written before tenants, and for
    /// the default tenant: those read as [`crate::DEFAULT_TENANT`]).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// What changed.
    pub kind: PresenceKind,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Worker that observed it.
    pub node: String,
}

impl PresenceEvent {
    /// Its Kafka key: the conversation within its tenant.
    pub fn key(&self) -> String {
        conversation_key(&self.tenant, &self.conversation_id)
    }
}

impl Record for PresenceEvent {
    fn version(&self) -> u16 {
        self.v
    }
}

/// Kinds of presence change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PresenceKind {
    /// First message from this user in the conversation.
    Joined,
    /// The user left.
    Left,
    /// A live connection opened.
    Online,
    /// A live connection closed.
    Offline,
}

/// A conversation's state at a log offset, on compacted `chat.conversations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSnapshot {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Conversation id (the Kafka key).
    pub conversation_id: String,
    /// Tenant the conversation belongs to (absent in records written before tenants, and for
    /// the default tenant: those read as [`crate::DEFAULT_TENANT`]).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// Users who wrote in the conversation, in order of first message, then the agent.
    pub participants: Vec<String>,
    /// The retained history, oldest first, each with its `chat.messages` offset.
    pub entries: Vec<SnapshotEntry>,
    /// Ids of user messages in `entries` that have no reply yet.
    #[serde(default)]
    pub pending: Vec<String>,
    /// The last `chat.messages` offset reflected in this snapshot.
    pub last_offset: i64,
    /// Ids of messages sent with an idempotency key, and when they were accepted (Unix
    /// seconds): a later record with one of these ids is a client's retry, not a new message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyed: Vec<KeyedId>,
    /// Unanswered messages that get an error reply instead of an answer (a conversation
    /// limit was reached when they arrived).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refused>,
    /// Offsets of unanswered user messages left out to keep the record within its size limit:
    /// read back from the log (the owner's committed offset never passes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstored: Vec<i64>,
    /// Older history was left out of `entries` (it stays in `chat.messages` until retention).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trimmed: bool,
    /// The first message's beginning: the title conversation lists show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Messages and replies so far, those left out of `entries` included (0 in snapshots
    /// written before it was counted).
    #[serde(default)]
    pub message_count: u64,
    /// Epoch of the writer.
    pub epoch: u64,
}

/// A message not to be answered, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// Its offset in `chat.messages`.
    pub offset: i64,
    /// The limit it met.
    pub why: RefusedWhy,
}

/// A conversation limit a message met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RefusedWhy {
    /// Too many messages were waiting for an answer.
    Pending,
    /// Its sender would have been one participant too many.
    Participants,
    /// Its reply was cancelled before it began: it gets an empty reply marked cancelled.
    Cancelled,
}

/// A message id derived from an idempotency key, as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedId {
    /// The message id.
    pub id: String,
    /// When it was accepted, in Unix seconds.
    pub at: i64,
}

/// How ids of messages sent with an idempotency key begin (the rest is derived from the tenant
/// and the key, so every worker gives a retry the same id).
pub const KEYED_ID_PREFIX: &str = "msg-k-";

impl ConversationSnapshot {
    /// Its Kafka key: the conversation within its tenant.
    pub fn key(&self) -> String {
        conversation_key(&self.tenant, &self.conversation_id)
    }
}

impl Record for ConversationSnapshot {
    fn version(&self) -> u16 {
        self.v
    }
}

/// One retained log record in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotEntry {
    /// Offset in `chat.messages`.
    pub offset: i64,
    /// The record.
    pub record: ChatRecord,
}
