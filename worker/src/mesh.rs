//! The worker's view of the mesh: it follows `chat.assignments` (the balancer's tables, which
//! become this worker's assignment in dynamic mode) and `chat.events` (every worker's load
//! reports and handoff steps), and publishes its own load report every heartbeat
//! (`heartbeat.rs`).

pub(crate) mod echo;
mod heartbeat;
pub mod history;
pub mod moves;

pub use heartbeat::Heartbeat;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshchat_wire::kafka::{self, KafkaError, META_TIMEOUT, TailFetch};
use meshchat_wire::{
    AssignmentTable, DEFAULT_HEARTBEAT_TIMEOUT_MS, HandoffEvent, HandoffStep, LoadReport, MIGRATION_REFUSED,
    MeshEvent, SystemEvent, decode,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::load::Ewma;
use crate::log::Log;
use crate::ownership::{AssignmentSource, Epoch, Partition};
use echo::{ECHO_LIMIT, EchoWatch};
use history::{LoadHistory, Sample};

// handoff steps kept: about four per move, so the last ~50 moves
const RECENT_MOVES: usize = 200;
const RECENT_REFUSALS: usize = 20;

/// What this worker knows of the mesh.
#[derive(Debug)]
pub struct Mesh {
    /// ChatAgent name (key of the assignment table).
    agent: String,
    reports: Mutex<BTreeMap<String, (LoadReport, Instant)>>,
    released: Mutex<HashSet<(Partition, Epoch)>>,
    moves: Mutex<VecDeque<HandoffEvent>>,
    refusals: Mutex<VecDeque<SystemEvent>>,
    table: Mutex<Option<AssignmentTable>>,
    handoff_ms: Mutex<Ewma>,
    history: Mutex<BTreeMap<String, LoadHistory>>,
}

/// A peer as this worker last heard of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Peer {
    /// Never heard of.
    Unknown,
    /// No heartbeat within the balancer's timeout.
    Silent,
    /// Heartbeating; its latest report.
    Alive(LoadReport),
}

// === impl Mesh ===

impl Mesh {
    /// An empty view of agent `agent`'s mesh.
    pub fn new(agent: &str) -> Self {
        Self {
            agent: agent.to_string(),
            reports: Mutex::new(BTreeMap::new()),
            released: Mutex::new(HashSet::new()),
            moves: Mutex::new(VecDeque::new()),
            refusals: Mutex::new(VecDeque::new()),
            table: Mutex::new(None),
            handoff_ms: Mutex::new(Ewma::default()),
            history: Mutex::new(BTreeMap::new()),
        }
    }

    /// The ChatAgent this mesh belongs to (the key of its tables).
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Silence after which a worker counts as gone: the balancer's, from its table.
    pub fn heartbeat_timeout(&self) -> Duration {
        let ms = self
            .table
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.heartbeat_timeout_ms))
            .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT_MS);
        Duration::from_millis(ms)
    }

    /// Latest load report of every worker heard from, with its age.
    pub fn reports(&self) -> Vec<(LoadReport, Duration)> {
        let now = Instant::now();
        self.reports
            .lock()
            .map(|m| m.values().map(|(r, at)| (r.clone(), now - *at)).collect())
            .unwrap_or_default()
    }

    /// The public URLs of every worker heard from (cheap: no reports are cloned).
    pub fn addresses(&self) -> Vec<String> {
        self.reports
            .lock()
            .map(|m| m.values().map(|(r, _)| r.address.clone()).collect())
            .unwrap_or_default()
    }

    /// How far behind worker `id` reported being over all its partitions (records), if it
    /// reported.
    pub fn lag_of(&self, id: &str) -> Option<i64> {
        let m = self.reports.lock().ok()?;
        let (r, _) = m.get(id)?;
        Some(r.partitions.iter().map(|p| p.lag).sum())
    }

    /// What this worker knows of worker `id`.
    pub fn peer(&self, id: &str) -> Peer {
        let timeout = self.heartbeat_timeout();
        let Ok(m) = self.reports.lock() else {
            return Peer::Unknown;
        };
        match m.get(id) {
            None => Peer::Unknown,
            Some((r, at)) if at.elapsed() <= timeout => Peer::Alive(r.clone()),
            Some(_) => Peer::Silent,
        }
    }

    /// Whether the old owner released `partition` for `epoch`.
    pub fn is_released(&self, partition: Partition, epoch: Epoch) -> bool {
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

    /// Every worker's load over the last minutes (from its reports), by worker id.
    pub fn load_history(&self) -> BTreeMap<String, Vec<Sample>> {
        self.history
            .lock()
            .map(|h| h.iter().map(|(id, l)| (id.clone(), l.samples())).collect())
            .unwrap_or_default()
    }

    /// Migrate requests the balancer refused recently, oldest first.
    pub fn recent_refusals(&self) -> Vec<SystemEvent> {
        self.refusals
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
                if let Ok(mut h) = self.history.lock() {
                    let at_ms = u64::try_from(r.timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                    h.entry(r.worker_id.clone()).or_default().record(Sample {
                        at_ms,
                        load: r.load_factor,
                        messages_per_s: r.partitions.iter().map(|p| p.messages_per_s).sum(),
                    });
                    // workers that left: their histories go once older than the window
                    h.retain(|_, l| {
                        l.newest()
                            .is_some_and(|t| at_ms.saturating_sub(t) <= history::KEEP_MS)
                    });
                }
                if let Ok(mut m) = self.reports.lock() {
                    m.insert(r.worker_id.clone(), (r, Instant::now()));
                }
            }
            MeshEvent::Handoff(h) => {
                if h.step == HandoffStep::Released
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
            MeshEvent::System(s) if s.kind == MIGRATION_REFUSED => {
                if let Ok(mut m) = self.refusals.lock() {
                    m.push_back(s);
                    while m.len() > RECENT_REFUSALS {
                        m.pop_front();
                    }
                }
            }
            MeshEvent::System(_) | MeshEvent::MigrateRequest(_) => {}
        }
    }

    fn on_table(&self, table: AssignmentTable) {
        if let Ok(mut t) = self.table.lock()
            && t.as_ref().is_none_or(|old| old.generation < table.generation)
        {
            *t = Some(table);
        }
    }

    /// Follows the assignment tables and the events until `stop`. With `assignments`
    /// (dynamic ownership), new tables become this worker's assignment.
    pub async fn follow(
        self: Arc<Self>,
        log: Arc<Log>,
        assignments: Option<Arc<AssignmentSource>>,
        stop: CancellationToken,
    ) -> Result<(), KafkaError> {
        let topics = log.topics().clone();
        // fixed partitions, sparse records
        let consumer: StreamConsumer =
            kafka::tail_consumer(log.kafka(), kafka::group::MESH_VIEW, TailFetch::LongPoll).create()?;
        let events = kafka::partition_count(log.kafka(), &topics.events).await?;
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
        // dropped off the runtime: a consumer that lost its coordinator blocks in its close
        let consumer = kafka::DropOffThread::new(consumer);
        let mut read: HashMap<i32, i64> = HashMap::new();
        let mut echo = EchoWatch::new(ECHO_LIMIT);
        let mut look = tokio::time::interval(Duration::from_secs(2));
        loop {
            let m = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = look.tick() => {
                    if echo.observe(Instant::now(), log.own_event(), &read) {
                        tracing::warn!("the mesh view stopped reading this worker's own heartbeats; following the mesh again with a fresh Kafka client");
                        return Err(KafkaError::Timeout { what: "reading the mesh events" });
                    }
                    continue;
                }
                m = consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "mesh watch consume error");
                    continue;
                }
            };
            if m.topic() == topics.events {
                read.insert(m.partition(), m.offset());
            }
            let Some(payload) = m.payload() else { continue };
            if m.topic() == topics.assignments {
                if m.key() != Some(self.agent.as_bytes()) {
                    continue;
                }
                match decode::<AssignmentTable>(payload) {
                    Ok(table) => {
                        if let Some(a) = &assignments
                            && a.apply_table(&table)
                        {
                            tracing::info!(generation = table.generation, "new assignment table");
                        }
                        self.on_table(table);
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable assignment table"),
                }
            } else if let Ok(ev) = decode::<MeshEvent>(payload) {
                self.on_event(ev);
            }
        }
    }
}
