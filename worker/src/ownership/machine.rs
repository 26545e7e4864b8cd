//! A partition's whole lifecycle on one worker, as a deterministic state machine: events in,
//! effects out, time passed in. The owner loop (`crate::owner`) feeds it what Kafka, the
//! assignment table, its timers and its answer tasks report, and carries out the effects in
//! order; nothing here reads a clock or a socket.
//!
//! ```text
//! wanted ──release seen / timeout──▶ acquiring ──commit read, fence written──▶ replaying ──caught up──▶ live
//!                                    (read the commit and snapshots, then write our fence)
//! live / replaying ──moved away──▶ releasing ──idle or grace over──▶ released (snapshot, commit, announce)
//! any ──newer fence read / moved by failover / lease lapsed──▶ abandoned (nothing written)
//! ```
//!
//! The rules that make replies exactly-once live here: nothing is written for a partition
//! (fence, reply, snapshot, commit, release) once it was abandoned, while the heartbeat lease
//! has lapsed, or after a newer owner's fence was read, until it is taken over afresh; a
//! take-over reads the old owner's commit and snapshots before it writes its fence; a release
//! waits for the partition's answers, at most for the handoff grace.

mod effect;
mod event;
mod phase;
mod release;
mod takeover;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub use effect::{Abandon, Announcement, Effect};
pub use event::Event;
#[cfg(test)]
pub use phase::TRANSITIONS;
pub use phase::{Exit, HeldPartition, Phase, Step};

use super::{Assignment, Epoch, Partition};

/// Durations the machine waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// In-flight answers of a partition being handed away get this long.
    pub handoff_grace: Duration,
    /// A new owner waits this long for the old owner's release before fencing it out.
    pub release_timeout: Duration,
    /// A failed take-over step is retried after this pause.
    pub retry: Duration,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Wanted {
        since: Instant,
    },
    Acquiring {
        since: Instant,
        /// Set once the commit was read: where replay starts and the fence before it.
        read: Option<(i64, Epoch)>,
    },
    Replaying {
        start: i64,
        end: i64,
        since: Instant,
    },
    Live,
    Releasing {
        deadline: Instant,
        to_epoch: Epoch,
        to: String,
        /// Nothing is written: we were fenced, moved by failover, or our lease lapsed.
        abandon: bool,
        /// The release's snapshots and commit are being written.
        writing: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct Part {
    epoch: Epoch,
    state: State,
    /// Next offset to consume, once known.
    position: Option<i64>,
    answers: u32,
    /// Assigned back to us while releasing: take it over again afterwards.
    reacquire: bool,
}

impl Part {
    fn phase(&self) -> Phase {
        phase_of(&self.state)
    }

    fn consuming(&self) -> bool {
        matches!(self.state, State::Replaying { .. } | State::Live)
    }

    fn abandoned(&self) -> bool {
        matches!(self.state, State::Releasing { abandon: true, .. })
    }
}

/// The partitions one worker holds and wants.
#[derive(Clone, Debug)]
pub struct PartitionMachine {
    me: String,
    timeouts: Timeouts,
    parts: BTreeMap<Partition, Part>,
    /// The latest assignment.
    assignment: Assignment,
    /// The lease lapsed: everything was abandoned; nothing is taken over until it holds again.
    suspended: bool,
    /// Abandoned by a lapse: taken over again, without awaiting a release, once it holds.
    resume: BTreeSet<Partition>,
    /// The partitions of the last [`Effect::Assign`] (one is emitted only on change).
    assigned: BTreeSet<Partition>,
    /// Every step taken, for the tests that check them against [`TRANSITIONS`].
    #[cfg(test)]
    steps: Vec<(Partition, Step)>,
}

// === impl PartitionMachine ===

impl PartitionMachine {
    /// A machine for worker `me` holding nothing.
    pub fn new(me: &str, timeouts: Timeouts) -> Self {
        Self {
            me: me.to_string(),
            timeouts,
            parts: BTreeMap::new(),
            assignment: Assignment::default(),
            suspended: false,
            resume: BTreeSet::new(),
            assigned: BTreeSet::new(),
            #[cfg(test)]
            steps: Vec::new(),
        }
    }

    /// The same worker's machine, holding nothing.
    pub fn fresh(&self) -> Self {
        Self::new(&self.me, self.timeouts)
    }

    /// Feeds one event; returns what to do, in order.
    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Event::Tick { lease_holds }
        | Event::SnapshotDue { lease_holds }
        | Event::Stopping { lease_holds } = event
        {
            self.lease(lease_holds, now, &mut out);
        }
        match event {
            Event::Assigned(a) => {
                self.assignment = a;
                self.reconcile(now, &mut out);
            }
            Event::ReleaseSeen { partition, epoch } => {
                if self
                    .parts
                    .get(&partition)
                    .is_some_and(|p| p.epoch == epoch && matches!(p.state, State::Wanted { .. }))
                {
                    self.start_acquiring(partition, now, Duration::ZERO, &mut out);
                }
            }
            Event::CommitRead {
                partition,
                epoch,
                start,
                fence,
            } => {
                if let Some(part) = self.acquiring(partition, epoch)
                    && let State::Acquiring { read, .. } = &mut part.state
                    && read.is_none()
                {
                    *read = Some((start, fence));
                    out.push(Effect::WriteFence { partition, epoch });
                }
            }
            Event::FenceWritten {
                partition,
                epoch,
                end,
            } => self.fence_written(partition, epoch, end, now, &mut out),
            Event::AcquireFailed { partition, epoch } => {
                // start over: the commit may have moved meanwhile, and our fence may not be in
                // the log
                if self.acquiring(partition, epoch).is_some() {
                    self.start_acquiring(partition, now, self.timeouts.retry, &mut out);
                }
            }
            Event::Consumed { partition, offset } => self.consumed(partition, offset, now, &mut out),
            Event::FenceRead { partition, epoch } => {
                if self
                    .parts
                    .get(&partition)
                    .is_some_and(|p| epoch > p.epoch && !p.abandoned())
                {
                    // a newer owner's fence: we are a zombie for it (declared dead, not told yet)
                    self.abandon(partition, epoch, Abandon::NewerFence(epoch), now, &mut out);
                    self.assign(&mut out);
                }
            }
            Event::AnswerStarted { partition, epoch } => {
                if let Some(part) = self.parts.get_mut(&partition)
                    && part.epoch == epoch
                {
                    part.answers += 1;
                }
            }
            Event::AnswerEnded { partition, epoch } => {
                if let Some(part) = self.parts.get_mut(&partition)
                    && part.epoch == epoch
                {
                    part.answers = part.answers.saturating_sub(1);
                }
                self.release_if_due(partition, now, &mut out);
            }
            Event::ReleaseWritten { partition, epoch, ok } => {
                self.release_written(partition, epoch, ok, now, &mut out);
            }
            Event::Tick { .. } => self.tick(now, &mut out),
            Event::SnapshotDue { .. } => {
                if !self.suspended {
                    let positions = self.committable(Part::consuming);
                    if !positions.is_empty() {
                        out.push(Effect::SnapshotAndCommit {
                            positions,
                            wait: false,
                        });
                    }
                }
            }
            Event::Stopping { .. } => {
                if !self.suspended {
                    // what is still ours: consumed partitions, and releases not finished
                    // (their new owner times out waiting and fences us)
                    let positions = self.committable(|p| p.consuming() || p.phase() == Phase::Releasing);
                    if !positions.is_empty() {
                        out.push(Effect::SnapshotAndCommit {
                            positions,
                            wait: true,
                        });
                    }
                }
            }
        }
        out
    }

    // --- getters: what the rest of the worker reads ---

    /// A held partition.
    pub fn get(&self, partition: Partition) -> Option<HeldPartition> {
        self.parts.get(&partition).map(|p| self.held(p))
    }

    /// Every held partition.
    pub fn held_partitions(&self) -> BTreeMap<Partition, HeldPartition> {
        self.parts.iter().map(|(k, p)| (*k, self.held(p))).collect()
    }

    /// Whether replies, snapshots and commits of `partition` may be written under `epoch`.
    pub fn may_write(&self, partition: Partition, epoch: Epoch) -> bool {
        self.get(partition)
            .is_some_and(|h| h.epoch == epoch && h.writable)
    }

    /// Whether `partition` is answered and served here now.
    pub fn is_live(&self, partition: Partition) -> bool {
        self.get(partition).is_some_and(|h| h.phase == Phase::Live)
    }

    /// Every partition this worker should own is live here.
    pub fn caught_up(&self) -> bool {
        self.assignment.owned.keys().all(|p| self.is_live(*p))
    }

    /// Partitions waiting for their old owner's release, with the epoch awaited.
    pub fn awaiting_release(&self) -> Vec<(Partition, Epoch)> {
        self.parts
            .iter()
            .filter(|(_, p)| matches!(p.state, State::Wanted { .. }))
            .map(|(k, p)| (*k, p.epoch))
            .collect()
    }

    /// Consumer positions of the partitions being consumed.
    pub fn positions(&self) -> BTreeMap<Partition, i64> {
        self.parts
            .iter()
            .filter(|(_, p)| p.consuming())
            .filter_map(|(k, p)| p.position.map(|o| (*k, o)))
            .collect()
    }

    /// The steps taken since the last call (tests).
    #[cfg(test)]
    fn take_steps(&mut self) -> Vec<(Partition, Step)> {
        std::mem::take(&mut self.steps)
    }

    fn held(&self, p: &Part) -> HeldPartition {
        let phase = p.phase();
        HeldPartition {
            epoch: p.epoch,
            phase,
            answers: p.answers,
            writable: !self.suspended
                && !p.abandoned()
                && matches!(phase, Phase::Replaying | Phase::Live | Phase::Releasing),
        }
    }

    // --- transitions: every phase change goes through `enter` or `exit` ---

    fn enter(&mut self, p: Partition, state: State) {
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        let (from, to) = (part.phase(), phase_of(&state));
        part.state = state;
        if from != to {
            self.record(p, Step::To(Some(from), to));
        }
    }

    fn exit(&mut self, p: Partition, how: Exit, now: Instant, out: &mut Vec<Effect>) {
        let Some(part) = self.parts.remove(&p) else { return };
        self.record(p, Step::Out(part.phase(), how));
        out.push(Effect::Forget { partition: p });
        if part.reacquire {
            self.reconcile(now, out);
        }
    }

    fn record(&mut self, _p: Partition, _step: Step) {
        #[cfg(test)]
        self.steps.push((_p, _step));
    }

    fn committable(&self, include: impl Fn(&Part) -> bool) -> BTreeMap<Partition, (i64, Epoch)> {
        self.parts
            .iter()
            .filter(|(_, p)| include(p) && !p.abandoned())
            .filter_map(|(k, p)| p.position.map(|o| (*k, (o, p.epoch))))
            .collect()
    }

    /// Emits [`Effect::Assign`] when the set of consumed partitions changed.
    fn assign(&mut self, out: &mut Vec<Effect>) {
        let positions = self.positions();
        if positions.keys().eq(self.assigned.iter()) {
            return;
        }
        self.assigned = positions.keys().copied().collect();
        out.push(Effect::Assign { positions });
    }
}

fn phase_of(state: &State) -> Phase {
    match state {
        State::Wanted { .. } => Phase::Wanted,
        State::Acquiring { .. } => Phase::Acquiring,
        State::Replaying { .. } => Phase::Replaying,
        State::Live => Phase::Live,
        State::Releasing { .. } => Phase::Releasing,
    }
}

#[cfg(test)]
mod tests;
