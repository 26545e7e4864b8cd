//! What the HTTP layer needs from a worker. Handlers depend on this trait only: the worker
//! implements it over its components (`crate::node`), and the handler tests implement it with
//! canned answers, so bad input, error shapes and forwarding decisions are tested with
//! `app(service).oneshot(request)` and no Kafka.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use meshchat_wire::worker::Ownership;
use meshchat_wire::{
    AssignmentTable, ChatRecord, HandoffEvent, LoadReport, MigrateRequest, PresenceKind, SystemEvent,
    UserMessage,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::drain::{Drained, UndoRefused};
use crate::index::{ListCursor, Page};
use crate::limits::Limits;
use crate::live::{CatchUpError, Cursor, NotServing, Positioned, Relay};
use crate::mesh::Peer;
use crate::mesh::history::Sample;
use crate::ownership::{Assignment, HeldPartition, OwnerInfo, Partition};
use crate::view::ConversationView;

/// Who this worker is and what it accepts.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Worker id.
    pub node_id: String,
    /// Partitions of `chat.messages`.
    pub partitions: i32,
    /// Largest message content, in bytes.
    pub max_content_bytes: usize,
    /// Where partitions come from.
    pub ownership: Ownership,
    /// A move's time when none was measured yet.
    pub handoff_grace: Duration,
    /// What peers present to the internal listener, when set.
    pub mesh_secret: Option<String>,
    /// The model id `/v1/models` lists: the ChatAgent's name.
    pub model: String,
}

/// A conversation as this worker can serve it from memory.
#[derive(Clone, Debug, PartialEq)]
pub enum Local {
    /// Its partition is not live here.
    NotHere,
    /// Its partition is live here and the conversation does not exist.
    Missing,
    /// Its partition is live here.
    Found(ConversationView),
}

/// Whether a user takes part in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Membership {
    /// The conversation does not exist (yet).
    Missing,
    /// It exists and the user takes part in it.
    Member,
    /// It exists and the user does not take part in it.
    Stranger,
}

impl Membership {
    /// `user`'s membership of a conversation with `participants` (`None`: no such conversation).
    pub fn of(participants: Option<&[String]>, user: &str) -> Self {
        match participants {
            None => Membership::Missing,
            Some(p) if p.iter().any(|u| u == user) => Membership::Member,
            Some(_) => Membership::Stranger,
        }
    }
}

/// An owner's answer to a forwarded read.
#[derive(Clone, Debug, PartialEq)]
pub struct Forwarded {
    /// HTTP status.
    pub status: u16,
    /// Body (JSON).
    pub body: bytes::Bytes,
}

/// This worker's health and load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerStatus {
    /// Smoothed load factor.
    pub load_factor: f64,
    /// Conversations with a message pending or being answered.
    pub active_conversations: usize,
    /// Conversations in memory.
    pub resident_conversations: usize,
    /// Conversations of its partitions evicted from memory (idle; they come back on use).
    pub evicted_conversations: usize,
    /// Smoothed user messages per second.
    pub messages_per_second: f64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Held partitions.
    pub held: BTreeMap<Partition, HeldPartition>,
    /// Assignment generation applied.
    pub generation: u64,
    /// LLM calls running.
    pub in_flight: u32,
    /// Answers waiting for an LLM slot.
    pub queued: u32,
    /// LLM slots.
    pub concurrency_limit: u32,
}

/// What readiness is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Kafka answered the last probe.
    pub kafka: bool,
    /// Every partition this worker should own is live here.
    pub caught_up: bool,
    /// The live fan-out is assigned.
    pub live: bool,
    /// The worker is draining.
    pub draining: bool,
}

impl Readiness {
    /// Ready to serve.
    pub fn ready(&self) -> bool {
        self.kafka && self.caught_up && self.live && !self.draining
    }
}

/// The mesh as this worker sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshView {
    /// ChatAgent (table key).
    pub agent: String,
    /// The latest assignment table.
    pub table: Option<AssignmentTable>,
    /// Every worker heard from, with the age of its latest report.
    pub reports: Vec<(LoadReport, Duration)>,
    /// Silence after which a worker counts as gone.
    pub heartbeat_timeout: Duration,
    /// Recent handoff steps, oldest first.
    pub recent_moves: Vec<HandoffEvent>,
    /// Migrate requests the balancer refused recently, oldest first.
    pub refused_migrations: Vec<SystemEvent>,
    /// Every worker's load over the last minutes, by worker id.
    pub load_history: BTreeMap<String, Vec<Sample>>,
}

/// The worker behind the HTTP API.
pub trait ChatService: Send + Sync + 'static {
    /// Identity and limits.
    fn settings(&self) -> &HttpSettings;

    /// Who callers are.
    fn auth(&self) -> &Authenticator;

    /// Whether `user` takes part in the conversation keyed `key`: from memory when this worker
    /// owns it, else from its owner, else from the log.
    fn membership(&self, key: &str, user: &str) -> impl Future<Output = Result<Membership, String>> + Send;

    /// [`membership`](Self::membership) from memory alone (`None`: the partition is not live
    /// here).
    fn local_membership(&self, key: &str, user: &str) -> Option<Membership>;

    /// `user`'s message to the conversation keyed `key` was accepted: it takes part from now on.
    fn joined(&self, key: &str, user: &str);

    /// What callers and tenants may take from this worker.
    fn limits(&self) -> &Arc<Limits>;

    /// Records the owner of the conversation keyed `key` is behind, over all its partitions, as
    /// last measured (here, or in the owner's heartbeat); `None` when not known.
    fn backlog(&self, key: &str) -> Option<i64>;

    /// Whether `tenant` may send another migrate request now (`Err`: when it may).
    fn admit_migration(&self, tenant: &str) -> Result<(), Duration>;

    /// Appends an accepted user message to its conversation's log; resolves once the broker
    /// acknowledged it (`Err`: why it did not, for a 503).
    fn append(&self, message: UserMessage) -> impl Future<Output = Result<(), String>> + Send;

    /// Appends another record of a conversation (a participant added, a cancel request) to its
    /// log; resolves once the broker acknowledged it.
    fn append_record(&self, record: ChatRecord) -> impl Future<Output = Result<(), String>> + Send;

    /// Brings the conversation keyed `key` back into memory if this worker evicted it (idle),
    /// so what follows reads it locally.
    fn wake(&self, key: &str) -> impl Future<Output = ()> + Send;

    /// The conversation from memory, when its partition is live here.
    fn local_conversation(&self, id: &str) -> Local;

    /// Who owns the partition of conversation `id`, when known.
    fn owner_of(&self, id: &str) -> Option<OwnerInfo>;

    /// Asks the owner's internal listener at `url` for the conversation keyed `key` (a
    /// forwarded read).
    fn forward_read(&self, url: &str, key: &str) -> impl Future<Output = Result<Forwarded, String>> + Send;

    /// Rebuilds conversation `id` from the log (`Ok(None)`: the log has no record of it).
    fn read_log(&self, id: &str) -> impl Future<Output = Result<Option<ConversationView>, String>> + Send;

    /// A page of `tenant`'s conversations (those `user` takes part in, when given) from the
    /// conversation index; `Err` while the index is still being read.
    fn list_conversations(
        &self,
        tenant: &str,
        user: Option<&str>,
        after: Option<ListCursor>,
        limit: usize,
    ) -> Result<Page, IndexLoading>;

    /// Conversation `id`'s whole history as the log keeps it, beyond what any worker holds
    /// (`Ok(None)`: the log has no record of it).
    fn read_history(&self, id: &str)
    -> impl Future<Output = Result<Option<ConversationView>, String>> + Send;

    /// This worker's live events of `conversation` from now on, and where now is in the
    /// conversation's logs (a new client's position). The first subscriber of a partition waits
    /// until this worker's fan-out reads it.
    fn subscribe(
        &self,
        conversation: &str,
    ) -> impl Future<Output = Result<(broadcast::Receiver<Arc<Positioned>>, Cursor), NotServing>> + Send;

    /// The live events of the conversation keyed `key` relayed by the worker whose internal
    /// listener is at `url` (its owner), after `after` or from its now.
    fn relay(
        &self,
        url: &str,
        key: &str,
        after: Option<Cursor>,
    ) -> impl Future<Output = Result<Relay, String>> + Send;

    /// The events of `conversation` at or after `from`, read back from the log up to its end
    /// now (a resume; subscribe first, then merge: see `live::Cursor`).
    fn catch_up(
        &self,
        conversation: &str,
        from: Cursor,
    ) -> impl Future<Output = Result<Vec<Positioned>, CatchUpError>> + Send;

    /// Publishes a user's presence in a conversation of `tenant`.
    fn presence(&self, tenant: &str, conversation: &str, user: &str, kind: PresenceKind);

    /// Fired when the worker stops: live streams close.
    fn closing(&self) -> CancellationToken;

    /// This worker's health and load.
    fn status(&self) -> WorkerStatus;

    /// What readiness is made of.
    fn readiness(&self) -> Readiness;

    /// The current assignment (what this worker should own, who owns the rest).
    fn assignment(&self) -> Assignment;

    /// The public URLs of the mesh's workers (all heard from, alive or not). Asked on every
    /// cross-origin request: implementations may answer without building a whole view.
    fn mesh_addresses(&self) -> Vec<String> {
        self.mesh().reports.into_iter().map(|(r, _)| r.address).collect()
    }

    /// Origins (`scheme://host[:port]`) of the mesh's workers: what browsers may call across
    /// (CORS, the pages' policy). Sorted, distinct.
    fn mesh_origins(&self) -> Vec<String> {
        let mut o: Vec<String> = self
            .mesh_addresses()
            .iter()
            .filter_map(|a| super::cors::origin_of(a))
            .collect();
        o.sort();
        o.dedup();
        o
    }

    /// The mesh as this worker sees it.
    fn mesh(&self) -> MeshView;

    /// What this worker knows of worker `id`.
    fn peer(&self, id: &str) -> Peer;

    /// Smoothed time of a partition's move, once one was measured here.
    fn handoff_estimate(&self) -> Option<Duration>;

    /// Publishes a migrate request for the balancer; resolves once the broker acknowledged it.
    fn request_migration(&self, request: MigrateRequest) -> impl Future<Output = Result<(), String>> + Send;

    /// Starts draining and resolves when it ends, with the partitions still held.
    fn drain(&self) -> impl Future<Output = (Drained, usize)> + Send;

    /// Undoes a drain SIGTERM did not follow (`Ok(false)`: there was none).
    fn undo_drain(&self) -> Result<bool, UndoRefused>;

    /// Prometheus text.
    fn metrics_text(&self) -> Result<String, std::fmt::Error>;

    /// Where the public API counts its requests (none: not counted).
    fn http_metrics(&self) -> Option<crate::metrics::HttpMetrics> {
        None
    }
}

/// The conversation index is still being read (a worker that just started).
#[derive(Debug, thiserror::Error)]
#[error("the conversation index is still loading")]
pub struct IndexLoading;
