//! The owner: holds this worker's partitions of `chat.messages`. What to do with each partition
//! is decided by the pure [`PartitionMachine`](crate::ownership::PartitionMachine); this loop
//! feeds it what happens (assignments, records, take-over results, answers ending, timers) and
//! carries out its effects in order: take-over reads and fences (`takeover.rs`), applying records
//! and starting answers (`records.rs`), answers themselves (`answer.rs`), snapshots, commits and
//! lag (`commit.rs`).

mod announce;
mod answer;
mod commit;
mod consumer;
mod index;
mod landed;
mod records;
mod stall;
mod takeover;
mod traces;

pub use answer::{AnswerSettings, Answerer};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use meshchat_wire::kafka::{
    self, DropOffThread, KafkaError, ReaderPool, StoredSnapshot, TailFetch, leaderless,
};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::load::Load;
use crate::log::Log;
use crate::mesh::Mesh;
use crate::metrics::Metrics;
use crate::ownership::{Abandon, AssignmentSource, Effect, Epoch, Event, HeartbeatLease, Held, Partition};
use crate::store::Store;
use crate::tokenizer::Tokenizer;

/// How the owner works.
#[derive(Clone, Debug)]
pub struct OwnerSettings {
    /// This worker's id.
    pub node_id: String,
    /// System prompt (empty for none).
    pub system_prompt: String,
    /// Context budget in tokens.
    pub context_tokens: u32,
    /// Time between snapshot rounds.
    pub snapshot_interval: Duration,
    /// Largest snapshot record, in bytes.
    pub snapshot_max_bytes: usize,
    /// A conversation idle this long leaves memory (it comes back from its snapshot).
    pub idle_evict: Duration,
    /// Most conversations held in memory; the least recently active beyond leave.
    pub max_resident: usize,
    /// Answers under way beyond which the owner stops reading new records: the log is the
    /// queue, so memory stays bounded however fast messages come.
    pub max_queued_answers: usize,
    /// How the consumer fetches.
    pub fetch: TailFetch,
    /// Time in-flight answers get on shutdown.
    pub shutdown_grace: Duration,
}

/// The owner component: the partitions held, their conversations, and the loop that keeps them.
pub struct Owner {
    settings: OwnerSettings,
    log: Arc<Log>,
    assignments: Arc<AssignmentSource>,
    held: Held,
    store: Arc<RwLock<Store>>,
    answerer: Arc<Answerer>,
    tokenizer: Tokenizer,
    metrics: Metrics,
    load: Arc<Load>,
    lease: Arc<HeartbeatLease>,
    mesh: Arc<Mesh>,
}

/// Take-over readers connected at start and kept idle (the pool grows while more take-overs
/// run at once, and closes the surplus after).
const WARM_READERS: usize = 3;

/// What a take-over task reports back.
enum TakeoverResult {
    CommitRead {
        partition: Partition,
        epoch: Epoch,
        start: i64,
        fence: Epoch,
        snapshots: Vec<StoredSnapshot>,
    },
    FenceWritten {
        partition: Partition,
        epoch: Epoch,
        end: i64,
    },
    Failed {
        partition: Partition,
        epoch: Epoch,
        error: KafkaError,
    },
}

/// The loop's own state: Kafka clients, running answers, what take-overs read.
struct Run {
    // dropped off the runtime: a consumer that lost its coordinator blocks in its close
    consumer: DropOffThread<StreamConsumer>,
    lag_reader: DropOffThread<Arc<BaseConsumer>>,
    readers: DropOffThread<Arc<ReaderPool>>,
    results: mpsc::Sender<TakeoverResult>,
    answers: JoinSet<()>,
    /// What each answer task answers for (reported when it ends, even by a panic).
    answering: HashMap<tokio::task::Id, (Partition, Epoch)>,
    cancels: HashMap<Partition, CancellationToken>,
    /// Per conversation, stops the answer in flight (a cancel request).
    stops: HashMap<String, CancellationToken>,
    /// Snapshots of the commit read being stepped (see `takeover_event`).
    read: Option<((Partition, Epoch), Vec<StoredSnapshot>)>,
    /// Snapshots of accepted commit reads, installed when their fence is written.
    snapshots: HashMap<(Partition, Epoch), Vec<StoredSnapshot>>,
    /// What the consumer was last assigned.
    assigned: BTreeSet<Partition>,
    /// The heartbeat lease at the last look (its changes are logged).
    lease_held: bool,
    /// Reading that stopped with records waiting.
    stalls: stall::StallWatch,
    /// Trace contexts of messages not answered yet.
    traces: traces::Pending,
}

/// A record consumed, kept while its effects are carried out.
struct Consumed<'a> {
    offset: i64,
    payload: Option<&'a [u8]>,
    /// The trace it carries on (tracing on, and it came with one).
    trace: Option<opentelemetry::Context>,
}

// === impl Run ===

impl Run {
    /// The event for an answer task that ended (written, failed, cancelled or panicked).
    fn answer_ended(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> Option<Event> {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "an answer panicked");
                }
                e.id()
            }
        };
        let (partition, epoch) = self.answering.remove(&id)?;
        Some(Event::AnswerEnded { partition, epoch })
    }
}

// === impl Owner ===

impl Owner {
    /// The owner of this worker.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: OwnerSettings,
        log: Arc<Log>,
        assignments: Arc<AssignmentSource>,
        held: Held,
        store: Arc<RwLock<Store>>,
        answerer: Arc<Answerer>,
        tokenizer: Tokenizer,
        metrics: Metrics,
        load: Arc<Load>,
        lease: Arc<HeartbeatLease>,
        mesh: Arc<Mesh>,
    ) -> Self {
        Self {
            settings,
            log,
            assignments,
            held,
            store,
            answerer,
            tokenizer,
            metrics,
            load,
            lease,
            mesh,
        }
    }

    /// Holds this worker's partitions until `shutdown`, then drains: no new answers, grace for
    /// in-flight ones, final snapshots and commit.
    pub async fn hold_partitions(&self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        // a failed earlier run's consumer and answers are gone: take everything over again
        self.held.reset();
        {
            // answers of an earlier (failed) run of this loop are gone; answer again
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.iter_mut().for_each(|c| c.in_flight = None);
        }
        let base = self.log.kafka();
        // an idle fetch waits long (no renewal every few ms on a quiet mesh); a partition added
        // to the assignment is woken into the next fetch (`assign`)
        let mut cfg = kafka::tail_consumer(base, self.log.owner_group(), self.settings.fetch);
        cfg.set("auto.offset.reset", "earliest");
        let (results, mut results_rx) = mpsc::channel(64);
        let readers = Arc::new(ReaderPool::new(base, self.log.owner_group(), WARM_READERS));
        {
            // connect and find the group coordinator now, not during the first take-over
            let (r, topic) = (readers.clone(), self.log.topics().messages.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = r.warm(WARM_READERS, &topic) {
                    tracing::warn!(error = %e, "could not prepare take-over readers");
                }
            });
        }
        let mut run = Run {
            consumer: DropOffThread::new(cfg.create()?),
            lag_reader: DropOffThread::new(Arc::new(
                kafka::manual_consumer(base, kafka::group::LAG).create()?,
            )),
            readers: DropOffThread::new(readers),
            results,
            answers: JoinSet::new(),
            answering: HashMap::new(),
            cancels: HashMap::new(),
            stops: HashMap::new(),
            read: None,
            snapshots: HashMap::new(),
            assigned: BTreeSet::new(),
            lease_held: true,
            stalls: stall::StallWatch::new(stall::STALL_LIMIT, stall::SUSPECT_LIMIT),
            traces: traces::Pending::default(),
        };
        let mut assignments = self.assignments.subscribe();
        let first = assignments.borrow_and_update().clone();
        self.lease.follow(first.heartbeat_timeout);
        self.step(Event::Assigned(first), &mut run, None).await?;
        let mut snapshot_tick = tokio::time::interval(self.settings.snapshot_interval);
        let mut lag_tick = tokio::time::interval(Duration::from_secs(2));
        let mut index_tick = tokio::time::interval(Duration::from_secs(1));
        // awaited releases and the lease are polled: keep the added pause small
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Ok(()) = assignments.changed() => {
                    let a = assignments.borrow_and_update().clone();
                    self.lease.follow(a.heartbeat_timeout);
                    self.step(Event::Assigned(a), &mut run, None).await?;
                }
                Some(result) = results_rx.recv() => {
                    let event = self.takeover_event(result, &mut run);
                    self.step(event, &mut run, None).await?;
                    run.read = None;
                }
                m = run.consumer.recv(), if !self.saturated(&run) => match m {
                    Ok(m) => {
                        let (partition, offset) = (m.partition(), m.offset());
                        let payload = m.payload().map(<[u8]>::to_vec);
                        let trace = crate::telemetry::from_record(m.headers());
                        drop(m);
                        let consumed = Consumed { offset, payload: payload.as_deref(), trace };
                        self.step(Event::Consumed { partition, offset }, &mut run, Some(consumed)).await?;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = tick.tick() => {
                    for (partition, epoch) in self.held.awaiting_release() {
                        if self.mesh.is_released(partition, epoch) {
                            self.step(Event::ReleaseSeen { partition, epoch }, &mut run, None).await?;
                        }
                    }
                    let lease_holds = self.lease_now(&mut run);
                    self.step(Event::Tick { lease_holds }, &mut run, None).await?;
                }
                _ = index_tick.tick() => self.write_index().await,
                _ = snapshot_tick.tick() => {
                    let lease_holds = self.lease_now(&mut run);
                    self.step(Event::SnapshotDue { lease_holds }, &mut run, None).await?;
                }
                _ = lag_tick.tick() => {
                    let positions = self.held.positions();
                    let reading = !self.saturated(&run);
                    let suspect = leaderless::leaderless_seen_within(stall::SUSPECT_WINDOW)
                        || self.log.came_back_within(stall::SUSPECT_WINDOW);
                    if let Some((partition, offset)) = run.stalls.observe(
                        Instant::now(),
                        &positions,
                        |p| self.load.lag(p),
                        reading,
                        suspect,
                    ) {
                        tracing::warn!(partition, offset, "reading stopped with records waiting; starting the owner loop again with fresh Kafka clients");
                        return Err(KafkaError::Timeout { what: "reading a held partition" });
                    }
                    self.report_lag(&run.lag_reader, &positions);
                }
                Some(done) = run.answers.join_next_with_id(), if !run.answers.is_empty() => {
                    if let Some(event) = run.answer_ended(done) {
                        self.step(event, &mut run, None).await?;
                    }
                }
            }
        }
        self.drain(run).await
    }

    /// Feeds `event` to the machine and carries out its effects, and those of the events they
    /// cause (a fence read while applying a record, an answer started, a release written).
    async fn step(
        &self,
        event: Event,
        run: &mut Run,
        consumed: Option<Consumed<'_>>,
    ) -> Result<(), KafkaError> {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for effect in self.held.on(event, Instant::now()) {
                self.carry_out(effect, run, consumed.as_ref(), &mut queue).await?;
            }
        }
        Ok(())
    }

    async fn carry_out(
        &self,
        effect: Effect,
        run: &mut Run,
        consumed: Option<&Consumed<'_>>,
        then: &mut VecDeque<Event>,
    ) -> Result<(), KafkaError> {
        match effect {
            Effect::ReadCommit {
                partition,
                epoch,
                after,
            } => self.read_commit(partition, epoch, after, run),
            Effect::WriteFence { partition, epoch } => {
                if let Some((key, snapshots)) = run.read.take_if(|(key, _)| *key == (partition, epoch)) {
                    run.snapshots.insert(key, snapshots);
                }
                self.write_fence(partition, epoch, run);
            }
            Effect::Restore {
                partition,
                epoch,
                fence,
            } => {
                let snapshots = run.snapshots.remove(&(partition, epoch)).unwrap_or_default();
                self.restore(partition, fence, snapshots);
            }
            Effect::Assign { positions } => self.assign(&positions, run)?,
            Effect::Apply {
                partition,
                offset,
                answer_at,
            } => {
                if let Some(c) = consumed.filter(|c| c.offset == offset && c.payload.is_some()) {
                    self.apply(partition, c, answer_at, run, then)?;
                }
            }
            Effect::StartAnswers { partition, epoch } => self.start_answers(partition, epoch, run, then),
            Effect::CancelAnswers { partition } => {
                if let Some(c) = run.cancels.remove(&partition) {
                    c.cancel();
                }
            }
            Effect::SnapshotAndCommit { positions, wait } => {
                if let Err(e) = self.snapshot_and_commit(&run.consumer, &positions, wait).await {
                    tracing::warn!(error = %e, "snapshot round failed; will retry");
                }
            }
            Effect::Release {
                partition,
                epoch,
                position,
            } => {
                let positions = BTreeMap::from([(partition, (position, epoch))]);
                let ok = match self.snapshot_and_commit(&run.consumer, &positions, true).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(partition, error = %e, "release could not snapshot and commit");
                        false
                    }
                };
                then.push_back(Event::ReleaseWritten { partition, epoch, ok });
            }
            Effect::Forget { partition } => self.forget(partition, run),
            Effect::Announce(a) => self.announce(a),
            Effect::Abandon { partition, why } => match why {
                Abandon::NewerFence(fence) => {
                    tracing::warn!(
                        partition,
                        fence,
                        "fenced by a newer owner; abandoning the partition"
                    )
                }
                Abandon::Failover => {
                    tracing::warn!(partition, "declared dead for this partition; abandoning it")
                }
                Abandon::LeaseLapsed => tracing::debug!(partition, "abandoned: heartbeat lease lapsed"),
            },
        }
        Ok(())
    }

    /// Whether enough answers are under way (waiting for an LLM slot, streaming, writing) that
    /// reading more records would only grow memory: the records wait in Kafka instead (consumer
    /// lag) and are read as answers end. Counted as tasks spawned, not as tasks that reached
    /// the slot queue: a burst spawns far more than the runtime has started yet.
    fn saturated(&self, run: &Run) -> bool {
        run.answers.len() >= self.settings.max_queued_answers
    }

    /// Whether the heartbeat lease holds now; logs when that changes.
    fn lease_now(&self, run: &mut Run) -> bool {
        let holds = self.lease.holds_now();
        if holds != run.lease_held {
            if holds {
                tracing::info!("heartbeats get through again; taking partitions over afresh");
            } else {
                tracing::warn!(
                    partitions = self.held.partitions().len(),
                    "heartbeat lease lapsed (paused or cut off from Kafka); abandoning every partition"
                );
            }
            run.lease_held = holds;
        }
        holds
    }

    /// Drops a partition: its answers, conversations, fence and what its take-over read.
    fn forget(&self, partition: Partition, run: &mut Run) {
        if let Some(c) = run.cancels.remove(&partition) {
            c.cancel();
        }
        run.snapshots.retain(|(p, _), _| *p != partition);
        run.traces.forget(partition);
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let partitions = self.log.partitions();
        store.retain(|c| meshchat_wire::partition_for(&c.key, partitions) != partition);
        store.forget_evicted(partition);
        store.forget_fence(partition);
    }

    /// Shutdown: no new answers, grace for in-flight ones, then snapshots and a final commit.
    async fn drain(&self, mut run: Run) -> Result<(), KafkaError> {
        tracing::info!(
            in_flight = run.answers.len(),
            "draining: no new answers; finishing in-flight ones"
        );
        self.answerer.stop_new();
        let finished = tokio::time::timeout(self.settings.shutdown_grace, async {
            while let Some(done) = run.answers.join_next_with_id().await {
                if let Some(event) = run.answer_ended(done) {
                    self.held.on(event, Instant::now());
                }
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                left = run.answers.len(),
                "grace period over; leaving unfinished answers to the next owner"
            );
            self.answerer.abandon();
            while run.answers.join_next().await.is_some() {}
        }
        let stopping = Event::Stopping {
            lease_holds: self.lease.holds_now(),
        };
        let mut result = Ok(());
        for effect in self.held.on(stopping, Instant::now()) {
            if let Effect::SnapshotAndCommit { positions, .. } = effect {
                result = self.snapshot_and_commit(&run.consumer, &positions, true).await;
            }
        }
        match &result {
            Ok(()) => tracing::info!("owner loop drained: snapshots written, offsets committed"),
            Err(e) => tracing::warn!(error = %e, "owner loop drained without its final commit"),
        }
        // closing a consumer of a group waits for its coordinator, which a stopping mesh's
        // broker may no longer answer (measured: minutes): close it aside, the process exits
        // without it
        let consumer = run.consumer;
        let closing = std::thread::Builder::new()
            .name("consumer-close".into())
            .spawn(move || drop(consumer));
        if let Err(e) = closing {
            tracing::debug!(error = %e, "closing the owner's consumer inline");
        }
        result
    }
}
