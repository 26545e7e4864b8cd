//! The worker's view of the mesh: it follows `chat.assignments` (the balancer's tables) and
//! `chat.events` (every worker's load reports and handoff events), and publishes its own load
//! report every heartbeat.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use meshchat_crds::{
    AssignmentTable, HandoffEvent, LoadReport, MeshEvent, PartitionLoad, SCHEMA_VERSION, Topics, decode,
    encode, partition_for,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::held::Held;
use crate::kafka::{KafkaError, META_TIMEOUT, Producer};
use crate::lease::Lease;
use crate::load::{Ewma, Load};
use crate::ownership::Ownership;
use crate::store::Store;

const RECENT_MOVES: usize = 100;

/// Counters per partition, fed by the owner loop and the answers.
#[derive(Debug, Default)]
pub struct PartitionStats {
    inner: Mutex<BTreeMap<i32, Counters>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    messages: u64,
    tokens: u64,
    in_flight: i64,
}

// === impl PartitionStats ===

impl PartitionStats {
    fn with(&self, p: i32, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut m) = self.inner.lock() {
            f(m.entry(p).or_default());
        }
    }

    /// A user message of `p` was handled.
    pub fn message(&self, p: i32) {
        self.with(p, |c| c.messages += 1);
    }

    /// An answer of `p` started (`+1`) or ended (`-1`).
    pub fn in_flight(&self, p: i32, delta: i64) {
        self.with(p, |c| c.in_flight += delta);
    }

    /// Tokens generated for `p`.
    pub fn tokens(&self, p: i32, n: u64) {
        self.with(p, |c| c.tokens += n);
    }

    /// Answers of `p` started and not ended.
    pub fn in_flight_of(&self, p: i32) -> i64 {
        self.inner
            .lock()
            .map(|m| m.get(&p).map_or(0, |c| c.in_flight))
            .unwrap_or(0)
    }

    fn snapshot(&self) -> BTreeMap<i32, Counters> {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// What this worker knows of the mesh.
#[derive(Debug)]
pub struct Mesh {
    /// ChatAgent name (key of the assignment table).
    pub agent: String,
    /// Heartbeats older than this mean a worker is gone.
    pub heartbeat_timeout: Duration,
    reports: Mutex<BTreeMap<String, (LoadReport, Instant)>>,
    released: Mutex<HashSet<(i32, u64)>>,
    moves: Mutex<VecDeque<HandoffEvent>>,
    table: Mutex<Option<AssignmentTable>>,
    handoff_ms: Mutex<Ewma>,
}

// === impl Mesh ===

impl Mesh {
    /// An empty view.
    pub fn new(agent: &str, heartbeat_timeout: Duration) -> Self {
        Self {
            agent: agent.to_string(),
            heartbeat_timeout,
            reports: Mutex::new(BTreeMap::new()),
            released: Mutex::new(HashSet::new()),
            moves: Mutex::new(VecDeque::new()),
            table: Mutex::new(None),
            handoff_ms: Mutex::new(Ewma::default()),
        }
    }

    /// Latest load report of every worker heard from, with its age.
    pub fn reports(&self) -> Vec<(LoadReport, Duration)> {
        let now = Instant::now();
        self.reports
            .lock()
            .map(|m| m.values().map(|(r, at)| (r.clone(), now - *at)).collect())
            .unwrap_or_default()
    }

    /// A worker's latest report if it is alive (heard from within the heartbeat timeout).
    pub fn live_report(&self, id: &str) -> Option<LoadReport> {
        let m = self.reports.lock().ok()?;
        let (r, at) = m.get(id)?;
        (at.elapsed() <= self.heartbeat_timeout).then(|| r.clone())
    }

    /// Whether the old owner released `partition` for `epoch`.
    pub fn is_released(&self, partition: i32, epoch: u64) -> bool {
        self.released
            .lock()
            .is_ok_and(|s| s.contains(&(partition, epoch)))
    }

    /// Recent handoff events, oldest first.
    pub fn recent_moves(&self) -> Vec<HandoffEvent> {
        self.moves
            .lock()
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The latest assignment table of this agent.
    pub fn table(&self) -> Option<AssignmentTable> {
        self.table.lock().ok().and_then(|t| t.clone())
    }

    /// Records how long taking over a partition took.
    pub fn record_handoff(&self, took: Duration) {
        if let Ok(mut e) = self.handoff_ms.lock() {
            e.update(took.as_secs_f64() * 1000.0, 0.3);
        }
    }

    /// Smoothed handoff time, once one was measured here.
    pub fn handoff_estimate(&self) -> Option<Duration> {
        let e = self.handoff_ms.lock().ok()?;
        (e.get() > 0.0).then(|| Duration::from_secs_f64(e.get() / 1000.0))
    }

    fn on_event(&self, ev: MeshEvent) {
        match ev {
            MeshEvent::LoadReport(r) => {
                if let Ok(mut m) = self.reports.lock() {
                    m.insert(r.worker_id.clone(), (r, Instant::now()));
                }
            }
            MeshEvent::Handoff(h) => {
                if h.step == "released"
                    && let Ok(mut s) = self.released.lock()
                {
                    s.insert((h.partition, h.epoch));
                }
                if let Ok(mut m) = self.moves.lock() {
                    m.push_back(h);
                    while m.len() > RECENT_MOVES {
                        m.pop_front();
                    }
                }
            }
            MeshEvent::System(_) | MeshEvent::MigrateRequest(_) => {}
        }
    }
}

/// Follows the assignment table and the events until `shutdown`. In dynamic mode, new tables
/// become this worker's ownership.
pub async fn watch_mesh(
    kafka: ClientConfig,
    topics: Topics,
    mesh: Arc<Mesh>,
    ownership: Arc<Ownership>,
    dynamic: bool,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let mut cfg = kafka.clone();
    cfg.set("group.id", "meshchat-mesh-watch")
        .set("enable.auto.commit", "false");
    // fixed partitions, sparse records
    crate::kafka::fetch_tail(&mut cfg, 0);
    let consumer: StreamConsumer = cfg.create()?;
    let events = crate::kafka::partition_count(&kafka, &topics.events).await?;
    let mut tpl = TopicPartitionList::new();
    tokio::task::block_in_place(|| -> Result<(), KafkaError> {
        tpl.add_partition_offset(&topics.assignments, 0, Offset::Beginning)?;
        for p in 0..events {
            let (_, high) = consumer.fetch_watermarks(&topics.events, p, META_TIMEOUT)?;
            tpl.add_partition_offset(&topics.events, p, Offset::Offset(high))?;
        }
        Ok(())
    })?;
    consumer.assign(&tpl)?;
    loop {
        let m = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "mesh watch consume error");
                continue;
            }
        };
        let Some(payload) = m.payload() else { continue };
        if m.topic() == topics.assignments {
            if m.key() != Some(mesh.agent.as_bytes()) {
                continue;
            }
            match decode::<AssignmentTable>(payload) {
                Ok(table) => {
                    if dynamic && ownership.apply_table(&table) {
                        tracing::info!(generation = table.generation, "new assignment table");
                    }
                    if let Ok(mut t) = mesh.table.lock()
                        && t.as_ref().is_none_or(|old| old.generation < table.generation)
                    {
                        *t = Some(table);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable assignment table"),
            }
        } else if let Ok(ev) = decode::<MeshEvent>(payload) {
            mesh.on_event(ev);
        }
    }
}

/// What a heartbeat reads.
pub struct Heartbeat {
    /// Producer.
    pub producer: Producer,
    /// Topics.
    pub topics: Topics,
    /// This worker.
    pub node_id: String,
    /// Its URL.
    pub address: String,
    /// Held partitions.
    pub held: Arc<Held>,
    /// Per-partition counters.
    pub stats: Arc<PartitionStats>,
    /// Load counters.
    pub load: Arc<Load>,
    /// Conversations (resident counts).
    pub store: Arc<RwLock<Store>>,
    /// Ownership (generation applied).
    pub ownership: Arc<Ownership>,
    /// Draining flag.
    pub draining: Arc<AtomicBool>,
    /// Partitions of chat.messages.
    pub partitions: i32,
    /// Partitions of chat.events.
    pub events_partitions: i32,
    /// Period.
    pub interval: Duration,
    /// Renewed by every acknowledged heartbeat.
    pub lease: Arc<Lease>,
}

// === impl Heartbeat ===

impl Heartbeat {
    /// Publishes a load report every interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last: BTreeMap<i32, Snapshot> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.interval);
        let secs = self.interval.as_secs_f64().max(1e-3);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let report = self.report(&mut last, secs);
            if let Ok(bytes) = encode(&MeshEvent::LoadReport(report)) {
                let p = partition_for(&self.node_id, self.events_partitions);
                let (producer, topic, key) = (
                    self.producer.clone(),
                    self.topics.events.clone(),
                    self.node_id.clone(),
                );
                let (lease, sent) = (self.lease.clone(), Instant::now());
                // the lease counts from when an acknowledged heartbeat was sent
                tokio::spawn(async move {
                    if producer.send(&topic, p, &key, &bytes).await.is_ok() {
                        lease.renew(sent);
                    }
                });
            }
        }
    }

    fn report(&self, last: &mut BTreeMap<i32, Snapshot>, secs: f64) -> LoadReport {
        let counters = self.stats.snapshot();
        let mut resident: BTreeMap<i32, u32> = BTreeMap::new();
        if let Ok(store) = self.store.read() {
            for c in store.iter() {
                *resident.entry(partition_for(&c.id, self.partitions)).or_default() += 1;
            }
        }
        let partitions = self
            .held
            .snapshot()
            .into_iter()
            .map(|(p, (epoch, _))| {
                let c = counters.get(&p).copied().unwrap_or_default();
                let prev = last
                    .insert(
                        p,
                        Snapshot {
                            messages: c.messages,
                            tokens: c.tokens,
                        },
                    )
                    .unwrap_or_default();
                PartitionLoad {
                    partition: p,
                    epoch,
                    messages_per_s: c.messages.saturating_sub(prev.messages) as f64 / secs,
                    tokens_per_s: c.tokens.saturating_sub(prev.tokens) as f64 / secs,
                    in_flight: u32::try_from(c.in_flight.max(0)).unwrap_or(0),
                    resident_conversations: resident.get(&p).copied().unwrap_or(0),
                }
            })
            .collect();
        LoadReport {
            v: SCHEMA_VERSION,
            worker_id: self.node_id.clone(),
            address: self.address.clone(),
            generation: self.ownership.view().generation,
            partitions,
            load_factor: self.load.load_factor(),
            draining: self.draining.load(Ordering::Relaxed),
            timestamp: OffsetDateTime::now_utc(),
        }
    }
}

/// Counter values at the previous heartbeat.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    messages: u64,
    tokens: u64,
}
