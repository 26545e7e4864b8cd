//! Random event sequences against invariants checked after every step, with the inputs (not the
//! machine's own state) deciding what must hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{GRACE, ME, timeouts};
use crate::ownership::machine::*;
use crate::ownership::{Assignment, OwnerInfo};

const PARTS: Partition = 3;

#[derive(Clone, Debug)]
enum Action {
    /// A new table: for each partition, whether it is ours and whether a move is a failover.
    Table(Vec<(bool, bool)>),
    ReleaseSeen(Partition),
    CompleteRead(usize, bool),
    CompleteFence(usize, bool, u8),
    Consume(Partition, u8),
    Append(Partition, u8),
    FenceRead(Partition, u8),
    StartAnswer(Partition),
    EndAnswer(usize),
    CompleteRelease(usize, bool),
    Tick(u16, bool),
    /// The lease lapses (or comes back) without a tick noticing yet.
    Lease(bool),
    SnapshotDue,
    Stopping,
}

fn action() -> impl Strategy<Value = Action> {
    let p = 0..PARTS;
    prop_oneof![
        2 => proptest::collection::vec((proptest::bool::weighted(0.6), proptest::bool::weighted(0.3)), PARTS as usize)
            .prop_map(Action::Table),
        1 => p.clone().prop_map(Action::ReleaseSeen),
        3 => (0usize..4, proptest::bool::weighted(0.85)).prop_map(|(i, ok)| Action::CompleteRead(i, ok)),
        3 => (0usize..4, proptest::bool::weighted(0.85), 0u8..4).prop_map(|(i, ok, n)| Action::CompleteFence(i, ok, n)),
        4 => (p.clone(), 1u8..8).prop_map(|(p, n)| Action::Consume(p, n)),
        1 => (p.clone(), 1u8..4).prop_map(|(p, n)| Action::Append(p, n)),
        1 => (p.clone(), 0u8..3).prop_map(|(p, b)| Action::FenceRead(p, b)),
        2 => p.clone().prop_map(Action::StartAnswer),
        2 => (0usize..6).prop_map(Action::EndAnswer),
        2 => (0usize..3, proptest::bool::weighted(0.85)).prop_map(|(i, ok)| Action::CompleteRelease(i, ok)),
        3 => (0u16..3_000, proptest::bool::weighted(0.9)).prop_map(|(ms, l)| Action::Tick(ms, l)),
        1 => proptest::bool::weighted(0.5).prop_map(Action::Lease),
        1 => Just(Action::SnapshotDue),
        1 => Just(Action::Stopping),
    ]
}

/// The world around one machine: the balancer's table, the log, outstanding I/O, and what the
/// inputs say must hold (computed from the inputs, not from the machine's own state).
struct World {
    m: PartitionMachine,
    now: Instant,
    lease: bool,
    /// The lease as the machine was last told (ticks, snapshot rounds and the stop carry it).
    told_lease: bool,
    generation: u64,
    owner: BTreeMap<Partition, (String, Epoch)>,
    /// Records in each partition's log.
    end: BTreeMap<Partition, i64>,
    /// What the consumer is assigned and where it is.
    consumer: BTreeMap<Partition, i64>,
    reads: Vec<(Partition, Epoch)>,
    fences: Vec<(Partition, Epoch)>,
    releases: Vec<(Partition, Epoch)>,
    answers: Vec<(Partition, Epoch)>,
    /// (partition, epoch) answers may start under (Apply / StartAnswers said so).
    answerable: BTreeSet<(Partition, Epoch)>,
    /// Nothing may be written for the partition until a take-over reads its commit afresh.
    void: BTreeSet<Partition>,
    /// A commit read was asked for since the partition became void.
    read_since_void: BTreeSet<Partition>,
    /// When the machine announced it releases the partition.
    releasing_since: BTreeMap<Partition, Instant>,
    /// Answers started under the held epoch and not ended, per partition.
    running: BTreeMap<Partition, u32>,
}

impl World {
    fn new() -> Self {
        Self {
            m: PartitionMachine::new(ME, timeouts()),
            now: Instant::now(),
            lease: true,
            told_lease: true,
            generation: 0,
            owner: (0..PARTS).map(|p| (p, ("other".to_string(), 1))).collect(),
            end: (0..PARTS).map(|p| (p, 5)).collect(),
            consumer: BTreeMap::new(),
            reads: Vec::new(),
            fences: Vec::new(),
            releases: Vec::new(),
            answers: Vec::new(),
            answerable: BTreeSet::new(),
            void: BTreeSet::new(),
            read_since_void: BTreeSet::new(),
            releasing_since: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    fn held_epoch(&self, p: Partition) -> Option<Epoch> {
        self.m.get(p).map(|h| h.epoch)
    }

    /// The lease lapses or holds again (the machine learns it from the next event carrying it).
    fn set_lease(&mut self, lease: bool) {
        self.lease = lease;
    }

    fn make_void(&mut self, p: Partition) {
        self.void.insert(p);
        self.read_since_void.remove(&p);
        self.answerable.retain(|(q, _)| *q != p);
    }

    fn event(&mut self, event: Event) -> Result<(), TestCaseError> {
        // what the inputs make void, before the machine sees them
        match &event {
            Event::FenceRead { partition, epoch }
                if self.held_epoch(*partition).is_some_and(|e| *epoch > e) =>
            {
                self.make_void(*partition);
            }
            Event::Assigned(a) => {
                for (p, _) in self.m.held_partitions() {
                    if !a.owned.contains_key(&p) && a.owners.get(&p).is_some_and(|o| o.failover) {
                        self.make_void(p);
                    }
                }
            }
            _ => {}
        }
        if let Event::Tick { lease_holds }
        | Event::SnapshotDue { lease_holds }
        | Event::Stopping { lease_holds } = &event
        {
            self.told_lease = *lease_holds;
            if !lease_holds {
                // a lapse voids everything held until it is taken over afresh
                for p in self.m.held_partitions().into_keys().collect::<Vec<_>>() {
                    self.make_void(p);
                }
            }
        }
        let cause = event.clone();
        let ended = match &event {
            Event::AnswerEnded { partition, epoch } if self.held_epoch(*partition) == Some(*epoch) => {
                Some(*partition)
            }
            _ => None,
        };
        if let Some(p) = ended {
            let n = self.running.entry(p).or_default();
            *n = n.saturating_sub(1);
        }
        let effects = self.m.on(event, self.now);
        for fx in effects {
            self.check(&cause, &fx)?;
            self.carry_out(fx);
        }
        self.check_view(&cause)
    }

    /// The invariants each effect must keep.
    fn check(&mut self, cause: &Event, fx: &Effect) -> Result<(), TestCaseError> {
        let writes_for = |fx: &Effect| -> Vec<Partition> {
            match fx {
                Effect::WriteFence { partition, .. }
                | Effect::Release { partition, .. }
                | Effect::StartAnswers { partition, .. }
                | Effect::Apply {
                    partition,
                    answer_at: Some(_),
                    ..
                }
                | Effect::Announce(Announcement::Released { partition, .. }) => vec![*partition],
                Effect::SnapshotAndCommit { positions, .. } => positions.keys().copied().collect(),
                _ => Vec::new(),
            }
        };
        let writes = writes_for(fx);
        prop_assert!(
            writes.is_empty() || self.told_lease,
            "{fx:?} while the heartbeat lease has lapsed (after {cause:?})"
        );
        for p in &writes {
            let fresh_fence = matches!(fx, Effect::WriteFence { .. }) && self.read_since_void.contains(p);
            prop_assert!(
                !self.void.contains(p) || fresh_fence,
                "{fx:?} for partition {p} after it was abandoned, fenced or its lease lapsed (after {cause:?})"
            );
        }
        match fx {
            Effect::WriteFence { partition, epoch } => {
                // a take-over reads the commit and snapshots before it writes its fence
                prop_assert_eq!(
                    cause,
                    &Event::CommitRead {
                        partition: *partition,
                        epoch: *epoch,
                        start: match cause {
                            Event::CommitRead { start, .. } => *start,
                            _ => -1,
                        },
                        fence: match cause {
                            Event::CommitRead { fence, .. } => *fence,
                            _ => 0,
                        },
                    },
                    "a fence written without the commit read first"
                );
                self.void.remove(partition);
            }
            Effect::ReadCommit { partition, .. } => {
                self.read_since_void.insert(*partition);
            }
            Effect::Release { partition, .. } => {
                // after the grace, or when its answers are done
                let since = self.releasing_since.get(partition).copied();
                let idle = self.running.get(partition).copied().unwrap_or(0) == 0;
                prop_assert!(
                    idle || since.is_some_and(|s| self.now >= s + GRACE),
                    "released partition {partition} with answers running before the grace ended"
                );
            }
            Effect::Apply {
                partition,
                offset,
                answer_at,
            } => {
                prop_assert_eq!(self.consumer.get(partition), Some(&(offset + 1)));
                if answer_at.is_some() {
                    prop_assert_eq!(self.m.get(*partition).map(|h| h.phase), Some(Phase::Live));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Invariants of the read-only view after every event.
    fn check_view(&self, cause: &Event) -> Result<(), TestCaseError> {
        for (p, h) in self.m.held_partitions() {
            prop_assert!(
                !(h.writable && self.void.contains(&p)),
                "partition {p} writable while void"
            );
            // the machine learns of a lapse from the next event carrying the lease
            prop_assert!(
                !h.writable || self.told_lease,
                "partition {p} writable with the lease lapsed"
            );
            // at most one writable epoch per partition
            let writable: Vec<Epoch> = (0..=h.epoch + 2).filter(|e| self.m.may_write(p, *e)).collect();
            prop_assert!(writable.len() <= 1, "{writable:?}");
            // what is no longer ours is being released (or gone), never taken over or served
            if let Event::Assigned(a) = cause
                && !a.owned.contains_key(&p)
            {
                prop_assert_eq!(
                    h.phase,
                    Phase::Releasing,
                    "partition {} kept after it moved away",
                    p
                );
            }
            if let Event::Tick { lease_holds: true } = cause
                && h.phase == Phase::Releasing
                && (h.answers == 0 || !h.writable)
                && self
                    .releasing_since
                    .get(&p)
                    .is_none_or(|s| self.now >= *s + GRACE)
            {
                prop_assert!(
                    self.releases.iter().any(|(q, _)| *q == p),
                    "partition {} idle in releasing without a release under way",
                    p
                );
            }
        }
        Ok(())
    }

    fn carry_out(&mut self, fx: Effect) {
        match fx {
            Effect::ReadCommit { partition, epoch, .. } => self.reads.push((partition, epoch)),
            Effect::WriteFence { partition, epoch } => {
                self.fences.push((partition, epoch));
            }
            Effect::Assign { positions } => {
                self.consumer = positions;
            }
            Effect::Apply {
                partition,
                answer_at: Some(e),
                ..
            }
            | Effect::StartAnswers { partition, epoch: e } => {
                self.answerable.insert((partition, e));
            }
            Effect::CancelAnswers { partition } => {
                self.answerable.retain(|(q, _)| *q != partition);
            }
            Effect::Release { partition, epoch, .. } => self.releases.push((partition, epoch)),
            Effect::Forget { partition } => {
                self.releasing_since.remove(&partition);
                self.running.remove(&partition);
                self.answerable.retain(|(q, _)| *q != partition);
            }
            Effect::Announce(Announcement::Releasing { partition, .. }) => {
                self.releasing_since.insert(partition, self.now);
            }
            Effect::Apply { .. }
            | Effect::Restore { .. }
            | Effect::SnapshotAndCommit { .. }
            | Effect::Announce(_)
            | Effect::Abandon { .. } => {}
        }
    }

    fn act(&mut self, a: Action) -> Result<(), TestCaseError> {
        match a {
            Action::Table(rows) => {
                self.generation += 1;
                let mut t = Assignment {
                    generation: self.generation,
                    ..Assignment::default()
                };
                for (p, (ours, failover)) in (0..PARTS).zip(rows) {
                    let (prev, epoch) = self.owner[&p].clone();
                    let next = if ours { ME.to_string() } else { format!("other{p}") };
                    let (epoch, from, failover) = if next == prev {
                        (epoch, None, false)
                    } else {
                        (epoch + 1, Some(prev.clone()), failover)
                    };
                    self.owner.insert(p, (next.clone(), epoch));
                    t.owners.insert(
                        p,
                        OwnerInfo {
                            node_id: next.clone(),
                            internal_url: None,
                            epoch,
                            from,
                            failover,
                        },
                    );
                    if ours {
                        t.owned.insert(p, epoch);
                    }
                }
                self.event(Event::Assigned(t))
            }
            Action::ReleaseSeen(p) => {
                let epoch = self.owner[&p].1;
                self.event(Event::ReleaseSeen { partition: p, epoch })
            }
            Action::CompleteRead(i, ok) => {
                if self.reads.is_empty() {
                    return Ok(());
                }
                let (partition, epoch) = self.reads.remove(i % self.reads.len());
                if ok {
                    self.event(Event::CommitRead {
                        partition,
                        epoch,
                        start: 2,
                        fence: epoch - 1,
                    })
                } else {
                    self.event(Event::AcquireFailed { partition, epoch })
                }
            }
            Action::CompleteFence(i, ok, extra) => {
                if self.fences.is_empty() {
                    return Ok(());
                }
                let (partition, epoch) = self.fences.remove(i % self.fences.len());
                if ok {
                    let end = self.end.entry(partition).or_default();
                    *end += 1 + i64::from(extra);
                    let end = *end;
                    self.event(Event::FenceWritten {
                        partition,
                        epoch,
                        end,
                    })
                } else {
                    self.event(Event::AcquireFailed { partition, epoch })
                }
            }
            Action::Consume(p, n) => {
                for _ in 0..n {
                    let Some(pos) = self.consumer.get(&p).copied() else {
                        return Ok(());
                    };
                    if pos >= self.end[&p] {
                        return Ok(());
                    }
                    self.consumer.insert(p, pos + 1);
                    self.event(Event::Consumed {
                        partition: p,
                        offset: pos,
                    })?;
                }
                Ok(())
            }
            Action::Append(p, n) => {
                *self.end.entry(p).or_default() += i64::from(n);
                Ok(())
            }
            Action::FenceRead(p, bump) => {
                let Some(e) = self.held_epoch(p) else {
                    return Ok(());
                };
                self.event(Event::FenceRead {
                    partition: p,
                    epoch: e + Epoch::from(bump),
                })
            }
            Action::StartAnswer(p) => {
                let Some(&(_, e)) = self.answerable.iter().find(|(q, _)| *q == p) else {
                    return Ok(());
                };
                self.answers.push((p, e));
                if self.held_epoch(p) == Some(e) {
                    *self.running.entry(p).or_default() += 1;
                }
                self.event(Event::AnswerStarted {
                    partition: p,
                    epoch: e,
                })
            }
            Action::EndAnswer(i) => {
                if self.answers.is_empty() {
                    return Ok(());
                }
                let (partition, epoch) = self.answers.remove(i % self.answers.len());
                self.event(Event::AnswerEnded { partition, epoch })
            }
            Action::CompleteRelease(i, ok) => {
                if self.releases.is_empty() {
                    return Ok(());
                }
                let (partition, epoch) = self.releases.remove(i % self.releases.len());
                self.event(Event::ReleaseWritten { partition, epoch, ok })
            }
            Action::Tick(ms, lease) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.set_lease(lease);
                self.event(Event::Tick {
                    lease_holds: self.lease,
                })
            }
            Action::Lease(lease) => {
                self.set_lease(lease);
                Ok(())
            }
            Action::SnapshotDue => self.event(Event::SnapshotDue {
                lease_holds: self.lease,
            }),
            Action::Stopping => self.event(Event::Stopping {
                lease_holds: self.lease,
            }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn invariants_hold_over_random_event_sequences(actions in proptest::collection::vec(action(), 1..120)) {
        let mut w = World::new();
        for a in actions {
            w.act(a)?;
            // every step the machine took is one of its declared transitions
            for (p, step) in w.m.take_steps() {
                prop_assert!(TRANSITIONS.contains(&step), "partition {p}: undeclared step {step:?}");
            }
        }
    }
}
