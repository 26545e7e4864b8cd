//! State shared by HTTP handlers and background loops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use meshchat_crds::Topics;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::held::Held;
use crate::hub::Hub;
use crate::kafka::Producer;
use crate::load::Load;
use crate::mesh::Mesh;
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::store::Store;
use crate::tokenizer::Tokenizer;

/// Everything the HTTP layer needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

/// The shared parts.
pub struct Shared {
    /// Configuration.
    pub config: Config,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of chat.messages.
    pub partitions: i32,
    /// Partitions of chat.events.
    pub events_partitions: i32,
    /// Kafka client settings (log reads).
    pub kafka: ClientConfig,
    /// Producer.
    pub producer: Producer,
    /// Ownership seam.
    pub ownership: Arc<Ownership>,
    /// What the owner loop holds.
    pub held: Arc<Held>,
    /// The mesh as this worker sees it.
    pub mesh: Arc<Mesh>,
    /// Owned conversations.
    pub store: Arc<RwLock<Store>>,
    /// Live subscribers.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Metrics,
    /// Their registry.
    pub registry: Arc<Registry>,
    /// Load counters.
    pub load: Arc<Load>,
    /// Token counter.
    pub tokenizer: Tokenizer,
    /// Client for forwarding reads to owners.
    pub http: reqwest::Client,
    /// Start time.
    pub started: Instant,
    /// Owned partitions are caught up.
    pub caught_up: Arc<AtomicBool>,
    /// The live fan-out is assigned (clients connecting now miss nothing).
    pub live_ready: Arc<AtomicBool>,
    /// Kafka answered the last health probe.
    pub kafka_ok: Arc<AtomicBool>,
    /// Shutting down.
    pub draining: Arc<AtomicBool>,
    /// Fired on shutdown: closes live streams.
    pub shutdown: CancellationToken,
}

// === impl Shared ===

impl Shared {
    /// Ready to serve: Kafka reachable, owned partitions caught up, not draining.
    pub fn ready(&self) -> bool {
        self.kafka_ok.load(Ordering::Relaxed)
            && self.live_ready.load(Ordering::Relaxed)
            && self.caught_up.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }
}
