//! Records that cross Kafka. JSON, camelCase, each with a schema version `v`, so Java and
//! Rust peers read the same bytes and a reader can refuse a version it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u16 = 1;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a record of the expected shape.
    #[error("malformed record: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The record comes from a newer writer.
    #[error("record schema version {found} is newer than supported version {supported}")]
    UnsupportedVersion {
        /// Version in the record.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
}

/// A record type with a schema version.
pub trait Record: Serialize + DeserializeOwned {
    /// The record's schema version field.
    fn version(&self) -> u16;
}

/// Serializes a record to its wire form.
pub fn encode<R: Record>(record: &R) -> Result<Vec<u8>, RecordError> {
    Ok(serde_json::to_vec(record)?)
}

/// Parses a record and checks its schema version.
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, RecordError> {
    let record: R = serde_json::from_slice(bytes)?;
    if record.version() > SCHEMA_VERSION {
        return Err(RecordError::UnsupportedVersion {
            found: record.version(),
            supported: SCHEMA_VERSION,
        });
    }
    Ok(record)
}

fn v1() -> u16 {
    SCHEMA_VERSION
}

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
}

impl Record for ChatRecord {
    fn version(&self) -> u16 {
        match self {
            ChatRecord::UserMessage(m) => m.v,
            ChatRecord::AgentReply(r) => r.v,
            ChatRecord::EpochFence(f) => f.v,
        }
    }
}

impl ChatRecord {
    /// The conversation this record belongs to (also its Kafka key); fences belong to none.
    pub fn conversation_id(&self) -> &str {
        match self {
            ChatRecord::UserMessage(m) => &m.conversation_id,
            ChatRecord::AgentReply(r) => &r.conversation_id,
            ChatRecord::EpochFence(_) => "",
        }
    }

    /// The record's message id (empty for fences).
    pub fn id(&self) -> &str {
        match self {
            ChatRecord::UserMessage(m) => &m.id,
            ChatRecord::AgentReply(r) => &r.id,
            ChatRecord::EpochFence(_) => "",
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

/// Class of LLM failure.
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
    /// Users who wrote in the conversation, in order of first message, then the agent.
    pub participants: Vec<String>,
    /// The retained history, oldest first, each with its `chat.messages` offset.
    pub entries: Vec<SnapshotEntry>,
    /// Ids of user messages in `entries` that have no reply yet.
    #[serde(default)]
    pub pending: Vec<String>,
    /// The last `chat.messages` offset reflected in this snapshot.
    pub last_offset: i64,
    /// Epoch of the writer.
    pub epoch: u64,
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

/// A record on `chat.events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MeshEvent {
    /// A worker's heartbeat with its load.
    LoadReport(LoadReport),
    /// A step of a partition handoff.
    Handoff(HandoffEvent),
    /// Lifecycle and operational events.
    System(SystemEvent),
    /// A request (from `POST /api/agent/migrate`) for the balancer to move partitions.
    MigrateRequest(MigrateRequest),
}

/// Partitions a client asked to move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateRequest {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Request id (echoed in the balancer's handoff events).
    pub id: String,
    /// Current owner.
    pub source: String,
    /// Where to move.
    pub target: String,
    /// Partitions to move.
    pub partitions: Vec<i32>,
    /// When asked.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

impl Record for MeshEvent {
    fn version(&self) -> u16 {
        match self {
            MeshEvent::LoadReport(r) => r.v,
            MeshEvent::Handoff(h) => h.v,
            MeshEvent::System(s) => s.v,
            MeshEvent::MigrateRequest(m) => m.v,
        }
    }
}

/// A worker's heartbeat: who it is, what it owns, how loaded it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Worker id.
    pub worker_id: String,
    /// Base URL peers and clients reach it on.
    pub address: String,
    /// Assignment generation the worker has applied.
    pub generation: u64,
    /// Load per owned partition.
    pub partitions: Vec<PartitionLoad>,
    /// Overall load, 0 = idle, 1 = at its concurrency limit.
    pub load_factor: f64,
    /// The worker is shutting down and wants its partitions moved away.
    pub draining: bool,
    /// When measured.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// Load of one owned partition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLoad {
    /// Partition of `chat.messages`.
    pub partition: i32,
    /// Epoch under which the worker holds it.
    pub epoch: u64,
    /// User messages per second, recent average.
    pub messages_per_s: f64,
    /// LLM tokens per second, recent average.
    pub tokens_per_s: f64,
    /// LLM calls in flight.
    pub in_flight: u32,
    /// Conversations held in memory.
    pub resident_conversations: u32,
}

/// One step of moving a partition between workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffEvent {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Partition being moved.
    pub partition: i32,
    /// Epoch of the new ownership.
    pub epoch: u64,
    /// Previous owner.
    pub from: String,
    /// New owner.
    pub to: String,
    /// What happened.
    pub step: HandoffStep,
    /// `chat.messages` offset committed by the releasing side.
    #[serde(default)]
    pub committed_offset: Option<i64>,
    /// Records the new owner replayed before going live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// A step of a handoff, as `chat.events` spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffStep {
    /// The balancer gave the partition a new owner (`assigned:<reason>`).
    Assigned(AssignReason),
    /// The old owner stopped starting answers for it and lets in-flight ones finish.
    Releasing,
    /// The old owner snapshotted and committed it and let it go (`committedOffset` set).
    Released,
    /// The new owner replayed it and answers (`replayed` set).
    Live,
    /// A step this build does not know (a newer writer's), kept as written.
    Other(String),
}

/// Why the balancer moved a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignReason {
    /// It had no owner yet.
    Unassigned,
    /// Its owner stopped heartbeating.
    Failover,
    /// Its owner is draining.
    Drain,
    /// Load balancing.
    Balance,
    /// Partition-count balancing of a quiet mesh.
    Spread,
    /// Emptying an under-loaded worker.
    Consolidate,
    /// A client asked for it (`POST /api/agent/migrate`).
    Requested,
}

impl AssignReason {
    /// Every reason, for parsing and tests.
    pub const ALL: [AssignReason; 7] = [
        Self::Unassigned,
        Self::Failover,
        Self::Drain,
        Self::Balance,
        Self::Spread,
        Self::Consolidate,
        Self::Requested,
    ];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unassigned => "unassigned",
            Self::Failover => "failover",
            Self::Drain => "drain",
            Self::Balance => "balance",
            Self::Spread => "spread",
            Self::Consolidate => "consolidate",
            Self::Requested => "requested",
        }
    }
}

impl std::fmt::Display for HandoffStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Assigned(r) => write!(f, "assigned:{}", r.as_str()),
            Self::Releasing => f.write_str("releasing"),
            Self::Released => f.write_str("released"),
            Self::Live => f.write_str("live"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl From<&str> for HandoffStep {
    fn from(s: &str) -> Self {
        match s {
            "releasing" => Self::Releasing,
            "released" => Self::Released,
            "live" => Self::Live,
            other => other
                .strip_prefix("assigned:")
                .and_then(|r| AssignReason::ALL.into_iter().find(|a| a.as_str() == r))
                .map_or_else(|| Self::Other(other.to_string()), Self::Assigned),
        }
    }
}

impl Serialize for HandoffStep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HandoffStep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::from(s.as_ref()))
    }
}

/// A lifecycle or operational event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemEvent {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Emitting worker or operator.
    pub node: String,
    /// What happened (`workerStarted`, `workerStopping`, ...).
    pub kind: String,
    /// Free-form detail.
    #[serde(default)]
    pub detail: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// Who owns which partition, on compacted `chat.assignments` (key = ChatAgent name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentTable {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// The ChatAgent this table belongs to.
    pub agent: String,
    /// Increases with every published change.
    pub generation: u64,
    /// Owner and epoch of every partition.
    pub partitions: Vec<PartitionAssignment>,
    /// Known workers by id.
    pub workers: BTreeMap<String, WorkerInfo>,
    /// Milliseconds without a heartbeat after which the balancer declares a worker dead. A
    /// worker's heartbeat lease lapses before it (so a worker cut off stops writing first): the
    /// one setting both sides read.
    #[serde(default = "default_heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
}

/// The balancer's heartbeat timeout when a table does not say (tables written before it did).
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 5_000;

fn default_heartbeat_timeout_ms() -> u64 {
    DEFAULT_HEARTBEAT_TIMEOUT_MS
}

impl Default for AssignmentTable {
    fn default() -> Self {
        Self {
            v: SCHEMA_VERSION,
            agent: String::new(),
            generation: 0,
            partitions: Vec::new(),
            workers: BTreeMap::new(),
            heartbeat_timeout_ms: DEFAULT_HEARTBEAT_TIMEOUT_MS,
        }
    }
}

impl Record for AssignmentTable {
    fn version(&self) -> u16 {
        self.v
    }
}

/// Owner of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionAssignment {
    /// Partition of `chat.messages`.
    pub partition: i32,
    /// Owning worker id.
    pub owner: String,
    /// Increases on every owner change (fencing token).
    pub epoch: u64,
    /// Previous owner, when this generation moved the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The previous owner is dead: take over without waiting for its release.
    #[serde(default)]
    pub failover: bool,
}

/// A worker as the assignment table knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// Base URL.
    pub address: String,
}

#[cfg(test)]
mod tests;
