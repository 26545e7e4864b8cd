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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Assignment, Epoch, Partition};

/// Where a held partition is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Assigned here by a planned move: waiting for the old owner's release.
    Wanted,
    /// Taking over: reading the old owner's commit and snapshots, then writing our fence.
    Acquiring,
    /// Replaying the log from the commit through our fence; nothing is answered yet.
    Replaying,
    /// Answering and serving reads.
    Live,
    /// Being handed away: no new answers; in-flight ones may finish until the grace ends.
    Releasing,
}

/// How a partition left this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exit {
    /// Snapshotted, committed and announced: the new owner starts from our commit.
    Released,
    /// Dropped without a write: a newer owner fenced us, took over by failover, or our lease
    /// lapsed (or it was never served).
    Abandoned,
}

impl Phase {
    /// Every phase, in lifecycle order.
    #[cfg(test)]
    pub const ALL: [Phase; 5] = [
        Phase::Wanted,
        Phase::Acquiring,
        Phase::Replaying,
        Phase::Live,
        Phase::Releasing,
    ];

    /// The name the architecture document's state diagram uses.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Wanted => "wanted",
            Phase::Acquiring => "acquiring",
            Phase::Replaying => "replaying",
            Phase::Live => "live",
            Phase::Releasing => "releasing",
        }
    }
}

impl Exit {
    /// The name the architecture document's state diagram uses.
    #[cfg(test)]
    pub fn name(self) -> &'static str {
        match self {
            Exit::Released => "released",
            Exit::Abandoned => "abandoned",
        }
    }
}

/// A step of the lifecycle: into a phase (from another, or from not held), or out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Into a phase.
    To(Option<Phase>, Phase),
    /// Out of this worker.
    Out(Phase, Exit),
}

/// Every step the machine can take (the state diagram in docs/architecture.md shows exactly
/// these; the tests check both the machine and the document against this list).
#[cfg(test)]
pub const TRANSITIONS: &[Step] = {
    use Exit as X;
    use Phase as P;
    &[
        Step::To(None, P::Wanted),
        Step::To(None, P::Acquiring),
        Step::To(Some(P::Wanted), P::Acquiring),
        Step::To(Some(P::Acquiring), P::Replaying),
        Step::To(Some(P::Acquiring), P::Live),
        Step::To(Some(P::Replaying), P::Live),
        Step::To(Some(P::Replaying), P::Releasing),
        Step::To(Some(P::Live), P::Releasing),
        Step::Out(P::Releasing, X::Released),
        Step::Out(P::Releasing, X::Abandoned),
        Step::Out(P::Wanted, X::Abandoned),
        Step::Out(P::Acquiring, X::Abandoned),
    ]
};

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

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// What this worker should own changed (a new assignment table, or the static
    /// configuration at start).
    Assigned(Assignment),
    /// The old owner announced it released `partition` for `epoch`.
    ReleaseSeen {
        /// Partition.
        partition: Partition,
        /// The new ownership's epoch the release was for.
        epoch: Epoch,
    },
    /// A take-over read `partition`'s committed offset (and the fence before it, from the
    /// commit's metadata) and its snapshots.
    CommitRead {
        /// Partition.
        partition: Partition,
        /// Epoch being taken over.
        epoch: Epoch,
        /// Offset replay starts at.
        start: i64,
        /// Highest fence before `start`.
        fence: Epoch,
    },
    /// Our fence is in the log; the log ended at `end` once it was written.
    FenceWritten {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
        /// The high watermark after the fence (replay runs up to it).
        end: i64,
    },
    /// A take-over step failed (Kafka); it is retried after [`Timeouts::retry`].
    AcquireFailed {
        /// Partition.
        partition: Partition,
        /// Epoch being taken over.
        epoch: Epoch,
    },
    /// A record of `partition` was consumed at `offset`.
    Consumed {
        /// Partition.
        partition: Partition,
        /// Offset.
        offset: i64,
    },
    /// A fence of `epoch` was read in `partition`.
    FenceRead {
        /// Partition.
        partition: Partition,
        /// The fence's epoch.
        epoch: Epoch,
    },
    /// An answer of `partition` started under `epoch`.
    AnswerStarted {
        /// Partition.
        partition: Partition,
        /// Epoch it answers under.
        epoch: Epoch,
    },
    /// An answer of `partition` under `epoch` ended (written, failed or cancelled).
    AnswerEnded {
        /// Partition.
        partition: Partition,
        /// Epoch it answered under.
        epoch: Epoch,
    },
    /// A [`Effect::Release`] was carried out: snapshots and commit written (`ok`), or not.
    ReleaseWritten {
        /// Partition.
        partition: Partition,
        /// The epoch we held it at.
        epoch: Epoch,
        /// Whether the broker acknowledged the snapshots and the commit.
        ok: bool,
    },
    /// Timers: releases awaited and releases due. `lease_holds`: the heartbeat lease holds.
    Tick {
        /// The heartbeat lease holds now.
        lease_holds: bool,
    },
    /// The periodic snapshot round is due.
    SnapshotDue {
        /// The heartbeat lease holds now.
        lease_holds: bool,
    },
    /// The worker stops (its answers had their grace): the final snapshots and commit.
    Stopping {
        /// The heartbeat lease holds now.
        lease_holds: bool,
    },
}

/// What the owner loop must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Read `partition`'s committed offset and snapshots (after `after`), then report
    /// [`Event::CommitRead`] (keeping the snapshots) or [`Event::AcquireFailed`].
    ReadCommit {
        /// Partition.
        partition: Partition,
        /// Epoch being taken over.
        epoch: Epoch,
        /// Wait this long first (a retry).
        after: Duration,
    },
    /// Write our fence into `partition` and read the log's end, then report
    /// [`Event::FenceWritten`] or [`Event::AcquireFailed`].
    WriteFence {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
    },
    /// Install the snapshots read for `partition` and start its fence at `fence`.
    Restore {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
        /// Highest fence before where replay starts.
        fence: Epoch,
    },
    /// Consume exactly these partitions from these offsets.
    Assign {
        /// Partition → next offset.
        positions: BTreeMap<Partition, i64>,
    },
    /// Apply the consumed record to the conversations; with `answer_at`, the partition is live
    /// and answers may start under that epoch.
    Apply {
        /// Partition.
        partition: Partition,
        /// Offset.
        offset: i64,
        /// Epoch to answer under, when live.
        answer_at: Option<Epoch>,
    },
    /// Start answering every conversation of `partition` with unanswered messages.
    StartAnswers {
        /// Partition.
        partition: Partition,
        /// Epoch to answer under.
        epoch: Epoch,
    },
    /// Cancel `partition`'s answers.
    CancelAnswers {
        /// Partition.
        partition: Partition,
    },
    /// Write snapshots of the changed conversations of these partitions, then commit these
    /// offsets (everything before them is in the snapshots). `wait`: for the broker.
    SnapshotAndCommit {
        /// Partition → (next offset, epoch held at).
        positions: BTreeMap<Partition, (i64, Epoch)>,
        /// Wait for the acknowledgements (releases and the final round).
        wait: bool,
    },
    /// Snapshot and commit `partition` at `position` and wait for the broker, then report
    /// [`Event::ReleaseWritten`].
    Release {
        /// Partition.
        partition: Partition,
        /// The epoch we held it at.
        epoch: Epoch,
        /// Next offset.
        position: i64,
    },
    /// Drop `partition`'s conversations, its fence and anything kept for its take-over.
    Forget {
        /// Partition.
        partition: Partition,
    },
    /// Publish a handoff step on `chat.events`.
    Announce(Announcement),
    /// `partition` is dropped without another write (for the log; what follows does the work).
    Abandon {
        /// Partition.
        partition: Partition,
        /// Why.
        why: Abandon,
    },
}

/// Why a partition is dropped without a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// A newer owner's fence (of this epoch) was read: this worker is a zombie for it.
    NewerFence(Epoch),
    /// The balancer moved it by failover: the new owner fenced without waiting for us.
    Failover,
    /// The heartbeat lease lapsed: this worker may have been declared dead.
    LeaseLapsed,
}

/// A handoff step to publish.
#[derive(Clone, Debug, PartialEq)]
pub enum Announcement {
    /// We stop starting answers for `partition`; `to` takes it over at `to_epoch`.
    Releasing {
        /// Partition.
        partition: Partition,
        /// The new owner.
        to: String,
        /// The new ownership's epoch.
        to_epoch: Epoch,
    },
    /// We committed `partition` at `committed` and let it go.
    Released {
        /// Partition.
        partition: Partition,
        /// The new owner.
        to: String,
        /// The new ownership's epoch.
        to_epoch: Epoch,
        /// The committed offset.
        committed: i64,
    },
    /// We replayed `partition` and answer it.
    Live {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
        /// Records replayed.
        replayed: u64,
        /// From the take-over's start (release awaited, if any) to live.
        took: Duration,
    },
}

/// One held partition as the rest of the worker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldPartition {
    /// Epoch it is held at.
    pub epoch: Epoch,
    /// Phase.
    pub phase: Phase,
    /// Answers in flight.
    pub answers: u32,
    /// Replies, snapshots and commits may be written under `epoch` (not abandoned, lease held).
    pub writable: bool,
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

    fn acquiring(&mut self, partition: Partition, epoch: Epoch) -> Option<&mut Part> {
        self.parts
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch && matches!(p.state, State::Acquiring { .. }))
    }

    /// Reads the commit (again, after a failure or a timeout) before anything is written.
    fn start_acquiring(&mut self, p: Partition, now: Instant, after: Duration, out: &mut Vec<Effect>) {
        let Some(part) = self.parts.get(&p) else { return };
        let since = match part.state {
            State::Wanted { since } | State::Acquiring { since, .. } => since,
            _ => now,
        };
        let epoch = part.epoch;
        self.enter(p, State::Acquiring { since, read: None });
        out.push(Effect::ReadCommit {
            partition: p,
            epoch,
            after,
        });
    }

    /// Takes over what is newly wanted and releases what no longer is.
    fn reconcile(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let owned: Vec<(Partition, Epoch)> = if self.suspended {
            Vec::new()
        } else {
            self.assignment.owned.iter().map(|(p, e)| (*p, *e)).collect()
        };
        for (p, epoch) in owned {
            match self.parts.get_mut(&p) {
                Some(part) if part.phase() == Phase::Releasing => part.reacquire = true,
                Some(part) => part.epoch = part.epoch.max(epoch),
                None => {
                    let info = self.assignment.owners.get(&p);
                    let wait = !self.resume.contains(&p)
                        && info
                            .is_some_and(|i| !i.failover && i.from.as_deref().is_some_and(|f| f != self.me));
                    self.parts.insert(
                        p,
                        Part {
                            epoch,
                            state: State::Wanted { since: now },
                            position: None,
                            answers: 0,
                            reacquire: false,
                        },
                    );
                    self.record(
                        p,
                        Step::To(None, if wait { Phase::Wanted } else { Phase::Acquiring }),
                    );
                    if !wait {
                        if let Some(part) = self.parts.get_mut(&p) {
                            part.state = State::Acquiring {
                                since: now,
                                read: None,
                            };
                        }
                        out.push(Effect::ReadCommit {
                            partition: p,
                            epoch,
                            after: Duration::ZERO,
                        });
                    }
                }
            }
        }
        let leaving: Vec<Partition> = self
            .parts
            .iter()
            .filter(|(p, part)| !self.assignment.owned.contains_key(p) && !part.abandoned())
            .map(|(p, _)| *p)
            .collect();
        for p in leaving {
            let info = self.assignment.owners.get(&p).cloned();
            let Some(part) = self.parts.get(&p) else { continue };
            if part.phase() == Phase::Releasing {
                // already being handed over; but a failover means the new owner did not wait
                // for us and fenced: what we would still write is void
                if let Some(o) = info.filter(|o| o.failover) {
                    self.abandon(p, o.epoch, Abandon::Failover, now, out);
                }
                continue;
            }
            if !part.consuming() {
                // never served: nothing to hand over
                self.exit(p, Exit::Abandoned, now, out);
                continue;
            }
            let to_epoch = info.as_ref().map_or(part.epoch + 1, |o| o.epoch);
            let to = info.as_ref().map(|o| o.node_id.clone()).unwrap_or_default();
            if info.is_some_and(|o| o.failover) {
                // moved by failover: our answers are void behind the new owner's fence
                self.abandon(p, to_epoch, Abandon::Failover, now, out);
                continue;
            }
            out.push(Effect::Announce(Announcement::Releasing {
                partition: p,
                to: to.clone(),
                to_epoch,
            }));
            self.enter(
                p,
                State::Releasing {
                    deadline: now + self.timeouts.handoff_grace,
                    to_epoch,
                    to,
                    abandon: false,
                    writing: false,
                },
            );
        }
        self.assign(out);
    }

    fn fence_written(&mut self, p: Partition, epoch: Epoch, end: i64, now: Instant, out: &mut Vec<Effect>) {
        let Some(part) = self.acquiring(p, epoch) else {
            return;
        };
        let State::Acquiring {
            since,
            read: Some((start, fence)),
        } = part.state
        else {
            return;
        };
        part.position = Some(start);
        out.push(Effect::Restore {
            partition: p,
            epoch,
            fence,
        });
        self.resume.remove(&p);
        if start >= end {
            self.go_live(p, 0, since, now, out);
        } else {
            self.enter(p, State::Replaying { start, end, since });
        }
        self.assign(out);
    }

    fn go_live(&mut self, p: Partition, replayed: u64, since: Instant, now: Instant, out: &mut Vec<Effect>) {
        let Some(epoch) = self.parts.get(&p).map(|part| part.epoch) else {
            return;
        };
        self.enter(p, State::Live);
        out.push(Effect::Announce(Announcement::Live {
            partition: p,
            epoch,
            replayed,
            took: now.saturating_duration_since(since),
        }));
        out.push(Effect::StartAnswers { partition: p, epoch });
    }

    fn consumed(&mut self, p: Partition, offset: i64, now: Instant, out: &mut Vec<Effect>) {
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        if !part.consuming() || part.position.is_some_and(|pos| offset < pos) {
            return; // not ours to read, or redelivered after a reassignment
        }
        part.position = Some(offset + 1);
        let answer_at = matches!(part.state, State::Live).then_some(part.epoch);
        out.push(Effect::Apply {
            partition: p,
            offset,
            answer_at,
        });
        if let State::Replaying { start, end, since } = part.state
            && offset + 1 >= end
        {
            self.go_live(p, u64::try_from(end - start).unwrap_or(0), since, now, out);
        }
    }

    /// Drops `p` without a word: answers cancelled; no snapshot, commit or release follows.
    fn abandon(&mut self, p: Partition, to_epoch: Epoch, why: Abandon, now: Instant, out: &mut Vec<Effect>) {
        out.push(Effect::Abandon { partition: p, why });
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        part.reacquire = false;
        if !part.consuming() && part.phase() != Phase::Releasing {
            self.exit(p, Exit::Abandoned, now, out);
            return;
        }
        out.push(Effect::CancelAnswers { partition: p });
        self.enter(
            p,
            State::Releasing {
                deadline: now,
                to_epoch,
                to: String::new(),
                abandon: true,
                writing: false,
            },
        );
    }

    /// The heartbeat lease as of now: a lapse suspends the worker (see [`Self::tick`] for what
    /// follows), a lease holding again after one lets it take its partitions back.
    fn lease(&mut self, lease_holds: bool, now: Instant, out: &mut Vec<Effect>) {
        if !lease_holds && !self.suspended {
            // maybe declared dead: new owners may have fenced us; abandon everything and take
            // what is still ours over afresh once heartbeats get through
            self.suspended = true;
            let held: Vec<(Partition, Epoch, bool)> = self
                .parts
                .iter()
                .map(|(p, part)| (*p, part.epoch, part.abandoned()))
                .collect();
            for (p, epoch, abandoned) in held {
                if self
                    .parts
                    .get(&p)
                    .is_some_and(|part| part.phase() != Phase::Releasing)
                {
                    self.resume.insert(p);
                }
                if !abandoned {
                    self.abandon(p, epoch, Abandon::LeaseLapsed, now, out);
                }
            }
            self.assign(out);
        } else if lease_holds && self.suspended && self.parts.is_empty() {
            self.suspended = false;
            self.reconcile(now, out);
            self.resume.clear();
        }
    }

    /// Timers: releases awaited too long, releases due (an abandoned one leaves at once).
    fn tick(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let parts: Vec<Partition> = self.parts.keys().copied().collect();
        for p in parts {
            let timed_out = self.parts.get(&p).is_some_and(|part| {
                matches!(part.state, State::Wanted { since } if now.saturating_duration_since(since) >= self.timeouts.release_timeout)
            });
            if timed_out {
                // the old owner is fenced out by our fence
                self.start_acquiring(p, now, Duration::ZERO, out);
            }
            self.release_if_due(p, now, out);
        }
    }

    /// Ends a release once the partition's answers are done or its grace is over.
    fn release_if_due(&mut self, p: Partition, now: Instant, out: &mut Vec<Effect>) {
        let suspended = self.suspended;
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        let State::Releasing {
            deadline,
            abandon,
            writing,
            ..
        } = &mut part.state
        else {
            return;
        };
        if *writing || !(part.answers == 0 || now >= *deadline) {
            return;
        }
        match part.position {
            Some(position) if !*abandon && !suspended => {
                *writing = true;
                out.push(Effect::CancelAnswers { partition: p });
                out.push(Effect::Release {
                    partition: p,
                    epoch: part.epoch,
                    position,
                });
            }
            _ => self.exit(p, Exit::Abandoned, now, out),
        }
    }

    fn release_written(&mut self, p: Partition, epoch: Epoch, ok: bool, now: Instant, out: &mut Vec<Effect>) {
        let Some(part) = self.parts.get(&p) else { return };
        let State::Releasing {
            to,
            to_epoch,
            writing: true,
            ..
        } = &part.state
        else {
            return;
        };
        if part.epoch != epoch {
            return;
        }
        let (to, to_epoch, position) = (to.clone(), *to_epoch, part.position);
        // a failed write is not announced: the new owner waits out its release timeout and
        // fences us, replaying from the commit it reads
        let how = if ok { Exit::Released } else { Exit::Abandoned };
        let reacquire = part.reacquire;
        if let Some(part) = self.parts.get_mut(&p) {
            part.reacquire = false;
        }
        self.exit(p, how, now, out);
        if ok && let Some(committed) = position {
            out.push(Effect::Announce(Announcement::Released {
                partition: p,
                to,
                to_epoch,
                committed,
            }));
        }
        if reacquire {
            self.reconcile(now, out);
        }
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
