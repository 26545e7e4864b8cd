//! MeshChat's wire contract, the one place both binaries take it from: the records that cross
//! Kafka (JSON, versioned), Kafka's placement (murmur2), the topics with their layout, consumer
//! groups and the commit format, the Kafka clients built the same way on both sides, and what
//! the operator tells a worker ([`worker`]).
#![forbid(unsafe_code)]

pub mod fuzz;
pub mod kafka;
mod partition;
mod records;
mod tenant;
mod topics;
pub mod worker;

pub use partition::{murmur2, partition_for};
pub use records::{
    AgentReply, AssignReason, AssignmentTable, CancelRequest, ChatRecord, ConversationDeleted,
    ConversationSnapshot, DEFAULT_HEARTBEAT_TIMEOUT_MS, EpochFence, FENCE_KEY, HandoffEvent, HandoffStep,
    IndexEntry, KEYED_ID_PREFIX, KeyedId, LoadReport, MIGRATION_REFUSED, MeshEvent, MigrateRequest,
    ParticipantAdded, PartitionAssignment, PartitionLoad, PresenceEvent, PresenceKind, Record, RecordError,
    Refused, RefusedWhy, ReplyChunk, ReplyError, ReplyErrorKind, SCHEMA_VERSION, SnapshotEntry, SystemEvent,
    UserMessage, WorkerInfo, decode, encode,
};
pub use tenant::{DEFAULT_TENANT, conversation_key, split_key};
pub use topics::{EVENTS_PARTITIONS, Partitioning, TopicSpec, Topics};
