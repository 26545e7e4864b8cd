//! Mesh records: heartbeats, handoff steps, lifecycle events and migrate requests on
//! `chat.events`, and the balancer's assignment tables on `chat.assignments`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Record, SCHEMA_VERSION, v1};

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
    /// Base URL clients reach it on.
    pub address: String,
    /// Base URL of its internal listener (peers' forwarded reads); absent from workers that
    /// predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_address: Option<String>,
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
    /// Records the owner is behind the partition's end (absent from older workers).
    #[serde(default)]
    pub lag: i64,
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

/// [`SystemEvent::kind`] of a migrate request the balancer refused; `detail` is
/// `<request id>: <why>` (a dead or draining target, a partition in its cooldown).
pub const MIGRATION_REFUSED: &str = "migrationRefused";

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
    /// Base URL of its public API.
    pub address: String,
    /// Base URL of its internal listener, where peers forward reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_address: Option<String>,
}
