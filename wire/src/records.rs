//! Records that cross Kafka. JSON, camelCase, each with a schema version `v`, so Java and
//! Rust peers read the same bytes and a reader can refuse a version it does not know.

mod chat;
mod index;
mod mesh;

pub use chat::{
    AgentReply, CancelRequest, ChatRecord, ConversationDeleted, ConversationSnapshot, EpochFence, FENCE_KEY,
    KEYED_ID_PREFIX, KeyedId, ParticipantAdded, PresenceEvent, PresenceKind, Refused, RefusedWhy, ReplyChunk,
    ReplyError, ReplyErrorKind, SnapshotEntry, UserMessage,
};
pub use index::IndexEntry;
pub use mesh::{
    AssignReason, AssignmentTable, DEFAULT_HEARTBEAT_TIMEOUT_MS, HandoffEvent, HandoffStep, LoadReport,
    MIGRATION_REFUSED, MeshEvent, MigrateRequest, PartitionAssignment, PartitionLoad, SystemEvent,
    WorkerInfo,
};

use serde::{Serialize, de::DeserializeOwned};

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

#[cfg(test)]
mod tests;
