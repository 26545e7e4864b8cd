//! The owner loop: holds this worker's partitions of `chat.messages`. For each partition it
//! should own it takes over (waits for the old owner's release unless that one died, writes an
//! epoch fence, restores snapshots, replays the log from the committed offset without calling
//! the LLM), then answers unanswered user messages one at a time per conversation, snapshots
//! and commits. For each partition it should no longer own it releases (no new answers, grace
//! for in-flight ones, snapshots, commit, `released` event). Static ownership is the case where
//! the wanted set never changes.

mod answering;
mod handoff;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use meshchat_crds::Topics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::answer::Answerer;
use crate::held::{Held, Phase};
use crate::kafka::{KafkaError, Producer, ReaderPool};
use crate::lease::Lease;
use crate::mesh::{Mesh, PartitionStats};
use crate::metrics::Metrics;
use crate::ownership::{Ownership, OwnershipView};
use crate::store::Store;
use crate::tokenizer::Tokenizer;

use handoff::Acquired;

/// Settings and shared state of the owner loop.
pub struct OwnerLoop {
    /// Kafka client settings.
    pub kafka: ClientConfig,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of chat.messages.
    pub partitions: i32,
    /// Partitions of chat.events.
    pub events_partitions: i32,
    /// Consumer group holding committed offsets (shared by all owners of this mesh).
    pub group_id: String,
    /// What this worker should own.
    pub ownership: Arc<Ownership>,
    /// What it holds.
    pub held: Arc<Held>,
    /// Releases seen from other workers.
    pub mesh: Arc<Mesh>,
    /// Conversations of held partitions (read by HTTP).
    pub store: Arc<RwLock<Store>>,
    /// Answers messages.
    pub answerer: Arc<Answerer>,
    /// Producer for fences, snapshots, presence and handoff events.
    pub producer: Producer,
    /// Token counter.
    pub tokenizer: Tokenizer,
    /// System prompt (empty for none).
    pub system_prompt: String,
    /// Context budget in tokens.
    pub context_tokens: u32,
    /// Time between snapshot rounds.
    pub snapshot_interval: Duration,
    /// See [`crate::kafka::fetch_tail`].
    pub fetch_batch_ms: u32,
    /// Time in-flight answers get on shutdown.
    pub grace: Duration,
    /// Time in-flight answers of a released partition get.
    pub handoff_grace: Duration,
    /// Longest wait for the old owner's release before taking over anyway (fences keep it safe).
    pub release_timeout: Duration,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-partition counters for load reports.
    pub stats: Arc<PartitionStats>,
    /// Set when every wanted partition is live.
    pub caught_up: Arc<AtomicBool>,
    /// This worker's heartbeat lease: nothing is written for any partition while it lapsed.
    pub lease: Arc<Lease>,
    /// This worker's id.
    pub node_id: String,
}

/// A partition's state in the loop.
#[derive(Debug)]
enum State {
    /// Waiting for the old owner's release (since when).
    AwaitRelease(Instant),
    /// Fencing and restoring (an acquire task runs).
    Acquiring(Instant),
    /// Consuming from `start` up to `target` without answering.
    Replaying { start: i64, target: i64, since: Instant },
    /// Answering.
    Live,
    /// Handing away: no new answers until `deadline`, then snapshot, commit, release. When
    /// `abandon`, the new owner took over without waiting for us (we were declared dead): our
    /// answers are void behind its fence, so we only stop and forget.
    Releasing {
        deadline: Instant,
        to_epoch: u64,
        to: String,
        abandon: bool,
    },
}

#[derive(Debug)]
struct Part {
    epoch: u64,
    state: State,
    /// Next offset to consume (when consuming).
    position: Option<i64>,
    /// Cancels this partition's answers.
    cancel: CancellationToken,
    /// Assigned back to us while releasing: take over again afterwards.
    reacquire: bool,
}

/// Take-over readers connected at start and kept idle (the pool grows while more take-overs
/// run at once, and closes the surplus after).
const WARM_READERS: usize = 3;

/// The loop's mutable state.
struct Run {
    parts: BTreeMap<i32, Part>,
    tasks: JoinSet<bool>,
    acquired_tx: mpsc::Sender<Result<Acquired, (i32, u64, KafkaError)>>,
    /// Connected clients for take-overs' reads.
    readers: Arc<ReaderPool>,
    /// The lease lapsed: every partition was abandoned; no take-over starts until it holds.
    suspended: bool,
    /// Partitions abandoned by a lapse, taken over again (without awaiting a release) after it.
    resume: BTreeSet<i32>,
    /// What the consumer was last assigned.
    assigned: BTreeSet<i32>,
}

// === impl OwnerLoop ===

impl OwnerLoop {
    /// Runs until `shutdown`, then drains: stops taking messages, gives in-flight answers the
    /// grace period, writes snapshots, commits offsets.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        self.caught_up.store(false, Ordering::Relaxed);
        {
            // answers of an earlier (failed) run of this loop are gone; answer again
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.iter_mut().for_each(|c| c.in_flight = None);
        }
        let mut cfg = self.kafka.clone();
        cfg.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        // an idle fetch waits long (no renewal every few ms on a quiet mesh); a partition added
        // to the assignment is woken into the next fetch (`assign`)
        crate::kafka::fetch_tail(&mut cfg, self.fetch_batch_ms);
        let consumer: StreamConsumer = cfg.create()?;
        let lag_reader: Arc<BaseConsumer> =
            Arc::new(self.kafka.clone().set("group.id", "meshchat-lag").create()?);
        let (acquired_tx, mut acquired_rx) = mpsc::channel(64);
        let readers = Arc::new(ReaderPool::new(
            self.kafka.clone().set("group.id", &self.group_id),
            WARM_READERS,
        ));
        {
            // connect and find the group coordinator now, not during the first take-over
            let (r, topic) = (readers.clone(), self.topics.messages.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = r.warm(WARM_READERS, &topic) {
                    tracing::warn!(error = %e, "could not prepare take-over readers");
                }
            });
        }
        let mut run = Run {
            parts: BTreeMap::new(),
            tasks: JoinSet::new(),
            acquired_tx,
            readers,
            suspended: false,
            resume: BTreeSet::new(),
            assigned: BTreeSet::new(),
        };
        let mut wanted = self.ownership.subscribe();
        let view = wanted.borrow_and_update().clone();
        self.reconcile(&view, &mut run, &consumer)?;
        let mut snapshot_tick = tokio::time::interval(self.snapshot_interval);
        let mut lag_tick = tokio::time::interval(Duration::from_secs(2));
        // release and take-over steps are polled: keep the added pause small
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Ok(()) = wanted.changed() => {
                    let view = wanted.borrow_and_update().clone();
                    self.reconcile(&view, &mut run, &consumer)?;
                }
                Some(done) = acquired_rx.recv() => self.on_acquired(done, &mut run, &consumer)?,
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let (p, o) = (m.partition(), m.offset());
                        let payload = m.payload().map(<[u8]>::to_vec);
                        drop(m);
                        self.on_record(p, o, payload.as_deref(), &mut run);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = tick.tick() => self.on_tick(&mut run, &consumer).await?,
                _ = snapshot_tick.tick() => {
                    let consuming = self.consuming(&run);
                    if let Err(e) = self.snapshot_and_commit(&consumer, &consuming, CommitMode::Async).await {
                        tracing::warn!(error = %e, "snapshot round failed; will retry");
                    }
                }
                _ = lag_tick.tick() => self.report_lag(&lag_reader, &self.consuming(&run)),
                Some(_) = run.tasks.join_next(), if !run.tasks.is_empty() => {}
            }
        }
        self.drain(&consumer, run).await
    }

    /// Starts taking over what is newly wanted and releasing what no longer is.
    fn reconcile(
        &self,
        view: &OwnershipView,
        run: &mut Run,
        consumer: &StreamConsumer,
    ) -> Result<(), KafkaError> {
        let now = Instant::now();
        // while suspended nothing new is taken over (releases below still proceed)
        let suspended = run.suspended;
        for (&p, &epoch) in view.owned.iter().filter(|_| !suspended) {
            match run.parts.get_mut(&p) {
                Some(part) if matches!(part.state, State::Releasing { .. }) => part.reacquire = true,
                Some(part) => part.epoch = part.epoch.max(epoch),
                None => {
                    let info = view.owners.get(&p);
                    let wait = !run.resume.contains(&p)
                        && info.is_some_and(|i| {
                            !i.failover && i.from.as_deref().is_some_and(|f| f != self.node_id)
                        });
                    let part = Part {
                        epoch,
                        state: if wait {
                            State::AwaitRelease(now)
                        } else {
                            State::Acquiring(now)
                        },
                        position: None,
                        cancel: CancellationToken::new(),
                        reacquire: false,
                    };
                    if !wait {
                        self.spawn_acquire(p, epoch, run);
                    }
                    tracing::info!(partition = p, epoch, wait_for_release = wait, "taking over");
                    run.parts.insert(p, part);
                }
            }
        }
        let mut reassign = false;
        for (&p, part) in run.parts.iter_mut() {
            if view.owned.contains_key(&p) || matches!(part.state, State::Releasing { .. }) {
                continue;
            }
            let (to, to_epoch) = view
                .owners
                .get(&p)
                .map_or((String::new(), part.epoch + 1), |o| (o.node_id.clone(), o.epoch));
            let abandon = view.owners.get(&p).is_some_and(|o| o.failover);
            match part.state {
                State::Live | State::Replaying { .. } => {
                    let deadline = if abandon {
                        // our answers are void behind the new owner's fence: stop them now
                        tracing::warn!(partition = p, to = %to, "declared dead for this partition; abandoning it");
                        part.cancel.cancel();
                        now
                    } else {
                        tracing::info!(partition = p, to = %to, "releasing");
                        self.publish_handoff(self.handoff(p, to_epoch, &self.node_id, &to, "releasing"));
                        now + self.handoff_grace
                    };
                    part.state = State::Releasing {
                        deadline,
                        to_epoch,
                        to,
                        abandon,
                    };
                    self.held.set(p, part.epoch, Phase::Releasing);
                    reassign = true;
                }
                // never served: nothing to hand over (a late acquire result is ignored)
                State::AwaitRelease(_) | State::Acquiring(_) => {
                    part.state = State::Releasing {
                        deadline: now,
                        to_epoch,
                        to,
                        abandon: true,
                    }
                }
                State::Releasing { .. } => {}
            }
        }
        if reassign {
            self.assign(consumer, run)?;
        }
        self.update_caught_up(run);
        Ok(())
    }

    /// The lease lapsed: this worker may have been declared dead and its partitions fenced by
    /// new owners. Abandon everything (answers cancelled; no snapshot, commit or release) and
    /// take the partitions still ours over again once heartbeats get through.
    fn suspend(&self, run: &mut Run, consumer: &StreamConsumer) -> Result<(), KafkaError> {
        tracing::warn!(
            partitions = run.parts.len(),
            "heartbeat lease lapsed (paused or cut off from Kafka); abandoning every partition"
        );
        run.suspended = true;
        let now = Instant::now();
        for (&p, part) in run.parts.iter_mut() {
            part.cancel.cancel();
            match &mut part.state {
                State::Releasing {
                    abandon, deadline, ..
                } => {
                    *abandon = true;
                    *deadline = now;
                }
                _ => {
                    run.resume.insert(p);
                    let epoch = part.epoch;
                    self.abandon(p, part, epoch, now);
                }
            }
            part.reacquire = false;
        }
        self.assign(consumer, run)?;
        self.update_caught_up(run);
        Ok(())
    }

    /// A newer owner's fence was read in `p`: this worker is a zombie for `p`. Its answers are
    /// void and its snapshots and commits must stop; drop the partition at once.
    fn fenced_out(&self, p: i32, fence: u64, run: &mut Run) {
        let Some(part) = run.parts.get_mut(&p) else { return };
        if fence <= part.epoch || matches!(part.state, State::Releasing { abandon: true, .. }) {
            return;
        }
        tracing::warn!(
            partition = p,
            epoch = part.epoch,
            fence,
            "fenced by a newer owner; abandoning the partition"
        );
        self.abandon(p, part, fence, Instant::now());
    }

    /// Drops `p` without a word: answers cancelled; no snapshot, commit or release follows.
    fn abandon(&self, p: i32, part: &mut Part, to_epoch: u64, now: Instant) {
        part.cancel.cancel();
        part.reacquire = false;
        part.state = State::Releasing {
            deadline: now,
            to_epoch,
            to: String::new(),
            abandon: true,
        };
        self.held.set(p, part.epoch, Phase::Releasing);
    }

    /// Consumer positions of partitions being consumed.
    fn consuming(&self, run: &Run) -> BTreeMap<i32, i64> {
        run.parts
            .iter()
            .filter(|(_, part)| matches!(part.state, State::Replaying { .. } | State::Live))
            .filter_map(|(p, part)| part.position.map(|o| (*p, o)))
            .collect()
    }

    /// Assigns the consumer exactly the partitions being consumed, at their positions.
    ///
    /// librdkafka keeps one fetch per broker in flight, and an added partition joins only the
    /// next one: with the consumer's long poll a take-over's replay could wait up to that wait
    /// on a quiet mesh. So when partitions are added while others are being fetched, the
    /// highest fence this owner has read in one of those is restated — a record the in-flight
    /// fetch returns at once (when that partition has the same leader as the added one; with
    /// several brokers the added one may still wait for its leader's poll). Readers keep the
    /// highest fence per partition, so the restatement changes no reader's state.
    fn assign(&self, consumer: &StreamConsumer, run: &mut Run) -> Result<(), KafkaError> {
        let consuming = self.consuming(run);
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &consuming {
            tpl.add_partition_offset(&self.topics.messages, *p, Offset::Offset(*o))?;
        }
        consumer.assign(&tpl)?;
        let now: BTreeSet<i32> = consuming.into_keys().collect();
        let added = now.difference(&run.assigned).next().is_some();
        // with fetch batching a fetch waits for 1 MB, which one small record does not end
        if added && self.fetch_batch_ms == 0 {
            self.wake(now.intersection(&run.assigned));
        }
        run.assigned = now;
        Ok(())
    }

    /// Restates, in the first of `fetched` where this owner has read a fence, the highest one
    /// (see [`Self::assign`]); queued, not awaited. Nothing is written while the heartbeat lease
    /// has lapsed, nor in a partition whose fence is not read yet (a replay still before it).
    fn wake<'a>(&self, fetched: impl Iterator<Item = &'a i32>) {
        if !self.lease.holds_now() {
            return;
        }
        let known = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            fetched
                .map(|q| (*q, store.fence(*q)))
                .find(|(_, fence)| *fence > 0)
        };
        let Some((q, epoch)) = known else { return };
        match meshchat_crds::encode(&handoff::fence(q, epoch, &self.node_id)) {
            Ok(bytes) => {
                self.producer
                    .send_nowait(&self.topics.messages, q, meshchat_crds::FENCE_KEY, &bytes)
            }
            Err(e) => tracing::warn!(partition = q, error = %e, "could not encode a fence"),
        }
    }

    fn update_caught_up(&self, run: &Run) {
        let view = self.ownership.view();
        let all = view.owned.keys().all(|p| {
            run.parts
                .get(p)
                .is_some_and(|part| matches!(part.state, State::Live))
        });
        self.caught_up.store(all, Ordering::Relaxed);
    }

    /// Timeouts: releases awaited, releases to finish, the lease.
    async fn on_tick(&self, run: &mut Run, consumer: &StreamConsumer) -> Result<(), KafkaError> {
        let now = Instant::now();
        let holds = self.lease.holds(now);
        if !holds && !run.suspended {
            self.suspend(run, consumer)?;
        } else if holds && run.suspended && run.parts.is_empty() {
            tracing::info!(partitions = ?run.resume, "heartbeats get through again; taking partitions over afresh");
            run.suspended = false;
            self.reconcile(&self.ownership.view(), run, consumer)?;
            run.resume.clear();
        }
        let mut to_acquire = Vec::new();
        let mut to_release = Vec::new();
        for (&p, part) in &run.parts {
            match &part.state {
                State::AwaitRelease(since) => {
                    let released = self.mesh.is_released(p, part.epoch);
                    if released || now.duration_since(*since) >= self.release_timeout {
                        if !released {
                            tracing::warn!(
                                partition = p,
                                "no release from the old owner in time; fencing it out"
                            );
                        }
                        to_acquire.push((p, part.epoch));
                    }
                }
                State::Releasing { deadline, .. } => {
                    let busy = self.in_flight_of(p);
                    if busy == 0 || now >= *deadline {
                        to_release.push(p);
                    }
                }
                _ => {}
            }
        }
        for (p, epoch) in to_acquire {
            if let Some(part) = run.parts.get_mut(&p) {
                part.state = State::Acquiring(now);
            }
            self.spawn_acquire(p, epoch, run);
        }
        for p in to_release {
            self.finish_release(p, run, consumer).await?;
        }
        Ok(())
    }
}
