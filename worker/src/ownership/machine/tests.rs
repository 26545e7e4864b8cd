use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::ownership::OwnerInfo;

const ME: &str = "me";
const GRACE: Duration = Duration::from_millis(2_000);
const RELEASE_TIMEOUT: Duration = Duration::from_millis(5_000);

fn timeouts() -> Timeouts {
    Timeouts {
        handoff_grace: GRACE,
        release_timeout: RELEASE_TIMEOUT,
        retry: Duration::from_secs(1),
    }
}

fn owner(node: &str, epoch: Epoch, from: Option<&str>, failover: bool) -> OwnerInfo {
    OwnerInfo {
        node_id: node.into(),
        url: format!("http://{node}"),
        epoch,
        from: from.map(String::from),
        failover,
    }
}

/// An assignment from `(partition, owner, epoch, from, failover)`.
fn table(generation: u64, rows: &[(Partition, &str, Epoch, Option<&str>, bool)]) -> Assignment {
    let mut a = Assignment {
        generation,
        ..Assignment::default()
    };
    for (p, node, epoch, from, failover) in rows {
        a.owners.insert(*p, owner(node, *epoch, *from, *failover));
        if *node == ME {
            a.owned.insert(*p, *epoch);
        }
    }
    a
}

fn phase(m: &PartitionMachine, p: Partition) -> Option<Phase> {
    m.get(p).map(|h| h.phase)
}

/// Takes `p` over at `epoch` from nothing, replaying `records` records: returns the machine.
fn live_at(m: &mut PartitionMachine, p: Partition, epoch: Epoch, t: Instant) {
    let fx = m.on(
        Event::CommitRead {
            partition: p,
            epoch,
            start: 10,
            fence: epoch.saturating_sub(1),
        },
        t,
    );
    assert_eq!(fx, vec![Effect::WriteFence { partition: p, epoch }]);
    let fx = m.on(
        Event::FenceWritten {
            partition: p,
            epoch,
            end: 11,
        },
        t,
    );
    assert!(fx.contains(&Effect::Restore {
        partition: p,
        epoch,
        fence: epoch.saturating_sub(1)
    }));
    assert_eq!(phase(m, p), Some(Phase::Replaying));
    let fx = m.on(
        Event::Consumed {
            partition: p,
            offset: 10,
        },
        t,
    );
    assert_eq!(
        fx[0],
        Effect::Apply {
            partition: p,
            offset: 10,
            answer_at: None
        },
        "nothing is answered during the replay"
    );
    assert!(fx.contains(&Effect::StartAnswers { partition: p, epoch }));
    assert_eq!(phase(m, p), Some(Phase::Live));
}

#[test]
fn a_static_take_over_reads_the_commit_then_fences_then_replays() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    let fx = m.on(Event::Assigned(table(0, &[(0, ME, 1, None, false)])), t);
    assert_eq!(
        fx,
        vec![Effect::ReadCommit {
            partition: 0,
            epoch: 1,
            after: Duration::ZERO
        }]
    );
    assert_eq!(phase(&m, 0), Some(Phase::Acquiring));
    assert!(
        !m.may_write(0, 1),
        "nothing is written before the take-over's fence"
    );
    // a fence result without a commit read first is ignored
    assert!(
        m.on(
            Event::FenceWritten {
                partition: 0,
                epoch: 1,
                end: 3
            },
            t
        )
        .is_empty()
    );
    live_at(&mut m, 0, 1, t);
    assert!(m.caught_up() && m.may_write(0, 1));
    assert_eq!(m.positions(), BTreeMap::from([(0, 11)]));
    // a record redelivered below the position is skipped
    assert!(
        m.on(
            Event::Consumed {
                partition: 0,
                offset: 9
            },
            t
        )
        .is_empty()
    );
    assert_eq!(
        m.on(
            Event::Consumed {
                partition: 0,
                offset: 11
            },
            t
        ),
        vec![Effect::Apply {
            partition: 0,
            offset: 11,
            answer_at: Some(1)
        }]
    );
}

#[test]
fn a_planned_move_away_waits_for_answers_then_releases_and_announces() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(Event::Assigned(table(1, &[(0, ME, 1, None, false)])), t);
    live_at(&mut m, 0, 1, t);
    m.on(
        Event::AnswerStarted {
            partition: 0,
            epoch: 1,
        },
        t,
    );
    let fx = m.on(Event::Assigned(table(2, &[(0, "b", 2, Some(ME), false)])), t);
    assert_eq!(
        fx,
        vec![
            Effect::Announce(Announcement::Releasing {
                partition: 0,
                to: "b".into(),
                to_epoch: 2
            }),
            Effect::Assign {
                positions: BTreeMap::new()
            },
        ]
    );
    assert_eq!(phase(&m, 0), Some(Phase::Releasing));
    assert!(
        m.may_write(0, 1),
        "the in-flight answer may still write its reply"
    );
    assert!(m.on(Event::Tick { lease_holds: true }, t + GRACE / 2).is_empty());
    // the answer ends: nothing left to wait for
    let fx = m.on(
        Event::AnswerEnded {
            partition: 0,
            epoch: 1,
        },
        t + GRACE / 2,
    );
    assert_eq!(
        fx,
        vec![
            Effect::CancelAnswers { partition: 0 },
            Effect::Release {
                partition: 0,
                epoch: 1,
                position: 11
            }
        ]
    );
    let fx = m.on(
        Event::ReleaseWritten {
            partition: 0,
            epoch: 1,
            ok: true,
        },
        t + GRACE / 2,
    );
    assert_eq!(
        fx,
        vec![
            Effect::Forget { partition: 0 },
            Effect::Announce(Announcement::Released {
                partition: 0,
                to: "b".into(),
                to_epoch: 2,
                committed: 11
            })
        ]
    );
    assert!(m.get(0).is_none());
}

#[test]
fn a_release_goes_ahead_when_the_grace_ends_and_a_failed_write_is_not_announced() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(Event::Assigned(table(1, &[(0, ME, 1, None, false)])), t);
    live_at(&mut m, 0, 1, t);
    m.on(
        Event::AnswerStarted {
            partition: 0,
            epoch: 1,
        },
        t,
    );
    m.on(Event::Assigned(table(2, &[(0, "b", 2, Some(ME), false)])), t);
    let fx = m.on(Event::Tick { lease_holds: true }, t + GRACE);
    assert!(fx.contains(&Effect::Release {
        partition: 0,
        epoch: 1,
        position: 11
    }));
    let fx = m.on(
        Event::ReleaseWritten {
            partition: 0,
            epoch: 1,
            ok: false,
        },
        t + GRACE,
    );
    assert_eq!(fx, vec![Effect::Forget { partition: 0 }]);
}

#[test]
fn a_planned_move_in_waits_for_the_release_or_its_timeout() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    let a = table(3, &[(0, ME, 2, Some("a"), false), (1, ME, 4, Some("a"), false)]);
    assert!(m.on(Event::Assigned(a), t).is_empty());
    assert_eq!(m.awaiting_release(), vec![(0, 2), (1, 4)]);
    // a release for another epoch does not count
    assert!(
        m.on(
            Event::ReleaseSeen {
                partition: 0,
                epoch: 1
            },
            t
        )
        .is_empty()
    );
    assert_eq!(
        m.on(
            Event::ReleaseSeen {
                partition: 0,
                epoch: 2
            },
            t
        ),
        vec![Effect::ReadCommit {
            partition: 0,
            epoch: 2,
            after: Duration::ZERO
        }]
    );
    assert!(
        m.on(Event::Tick { lease_holds: true }, t + RELEASE_TIMEOUT / 2)
            .is_empty()
    );
    assert_eq!(
        m.on(Event::Tick { lease_holds: true }, t + RELEASE_TIMEOUT),
        vec![Effect::ReadCommit {
            partition: 1,
            epoch: 4,
            after: Duration::ZERO
        }],
        "the old owner is fenced out after the release timeout"
    );
}

#[test]
fn a_failover_move_away_abandons_without_a_write() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(Event::Assigned(table(1, &[(0, ME, 1, None, false)])), t);
    live_at(&mut m, 0, 1, t);
    m.on(
        Event::AnswerStarted {
            partition: 0,
            epoch: 1,
        },
        t,
    );
    let fx = m.on(Event::Assigned(table(2, &[(0, "b", 2, Some(ME), true)])), t);
    assert_eq!(
        fx[..2],
        [
            Effect::Abandon {
                partition: 0,
                why: Abandon::Failover
            },
            Effect::CancelAnswers { partition: 0 }
        ]
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Announce(_))));
    assert!(
        !m.may_write(0, 1),
        "its answers are void behind the new owner's fence"
    );
    assert_eq!(
        m.on(Event::Tick { lease_holds: true }, t),
        vec![Effect::Forget { partition: 0 }]
    );
    assert!(m.on(Event::Stopping { lease_holds: true }, t).is_empty());
}

#[test]
fn a_newer_fence_makes_a_zombie_drop_the_partition() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(Event::Assigned(table(1, &[(0, ME, 3, None, false)])), t);
    live_at(&mut m, 0, 3, t);
    // our own fence, or an older one, changes nothing
    assert!(
        m.on(
            Event::FenceRead {
                partition: 0,
                epoch: 3
            },
            t
        )
        .is_empty()
    );
    let fx = m.on(
        Event::FenceRead {
            partition: 0,
            epoch: 4,
        },
        t,
    );
    assert_eq!(
        fx[..2],
        [
            Effect::Abandon {
                partition: 0,
                why: Abandon::NewerFence(4)
            },
            Effect::CancelAnswers { partition: 0 }
        ]
    );
    assert!(!m.may_write(0, 3));
    // the final round writes nothing for it
    assert!(m.on(Event::Stopping { lease_holds: true }, t).is_empty());
    assert!(m.on(Event::SnapshotDue { lease_holds: true }, t).is_empty());
    assert_eq!(
        m.on(Event::Tick { lease_holds: true }, t),
        vec![Effect::Forget { partition: 0 }]
    );
}

#[test]
fn a_lapsed_lease_abandons_everything_and_takes_it_back_afresh() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(
        Event::Assigned(table(1, &[(0, ME, 1, None, false), (1, ME, 1, None, false)])),
        t,
    );
    live_at(&mut m, 0, 1, t);
    live_at(&mut m, 1, 1, t);
    let fx = m.on(Event::Tick { lease_holds: false }, t);
    assert!(fx.contains(&Effect::Forget { partition: 0 }) && fx.contains(&Effect::Forget { partition: 1 }));
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Release { .. } | Effect::SnapshotAndCommit { .. }))
    );
    assert!(m.suspended && m.held_partitions().is_empty());
    assert!(m.on(Event::SnapshotDue { lease_holds: false }, t).is_empty());
    // a new table while suspended takes nothing over
    assert!(
        m.on(
            Event::Assigned(table(2, &[(0, ME, 1, None, false), (1, ME, 1, None, false)])),
            t
        )
        .is_empty()
    );
    let fx = m.on(Event::Tick { lease_holds: true }, t);
    assert_eq!(
        fx,
        vec![
            Effect::ReadCommit {
                partition: 0,
                epoch: 1,
                after: Duration::ZERO
            },
            Effect::ReadCommit {
                partition: 1,
                epoch: 1,
                after: Duration::ZERO
            },
        ],
        "taken over again without waiting for anybody's release"
    );
}

#[test]
fn assigned_back_while_releasing_is_taken_over_again_after_the_release() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(Event::Assigned(table(1, &[(0, ME, 1, None, false)])), t);
    live_at(&mut m, 0, 1, t);
    m.on(Event::Assigned(table(2, &[(0, "b", 2, Some(ME), false)])), t);
    m.on(Event::Assigned(table(3, &[(0, ME, 3, Some("b"), true)])), t);
    let fx = m.on(Event::Tick { lease_holds: true }, t);
    assert!(fx.contains(&Effect::Release {
        partition: 0,
        epoch: 1,
        position: 11
    }));
    let fx = m.on(
        Event::ReleaseWritten {
            partition: 0,
            epoch: 1,
            ok: true,
        },
        t,
    );
    assert_eq!(fx[0], Effect::Forget { partition: 0 });
    assert!(fx.contains(&Effect::ReadCommit {
        partition: 0,
        epoch: 3,
        after: Duration::ZERO
    }));
}

#[test]
fn a_failed_take_over_step_starts_over_after_a_pause() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(Event::Assigned(table(1, &[(0, ME, 1, None, false)])), t);
    m.on(
        Event::CommitRead {
            partition: 0,
            epoch: 1,
            start: 0,
            fence: 0,
        },
        t,
    );
    let fx = m.on(
        Event::AcquireFailed {
            partition: 0,
            epoch: 1,
        },
        t,
    );
    assert_eq!(
        fx,
        vec![Effect::ReadCommit {
            partition: 0,
            epoch: 1,
            after: Duration::from_secs(1)
        }]
    );
    // the commit is read again before a fence is written
    assert!(
        m.on(
            Event::FenceWritten {
                partition: 0,
                epoch: 1,
                end: 0
            },
            t
        )
        .is_empty()
    );
}

#[test]
fn snapshot_rounds_and_the_final_commit_cover_what_is_consumed() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    m.on(
        Event::Assigned(table(1, &[(0, ME, 1, None, false), (1, ME, 2, None, false)])),
        t,
    );
    live_at(&mut m, 0, 1, t);
    assert_eq!(
        m.on(Event::SnapshotDue { lease_holds: true }, t),
        vec![Effect::SnapshotAndCommit {
            positions: BTreeMap::from([(0, (11, 1))]),
            wait: false
        }],
        "partition 1 is still being taken over"
    );
    assert_eq!(
        m.on(Event::Stopping { lease_holds: true }, t),
        vec![Effect::SnapshotAndCommit {
            positions: BTreeMap::from([(0, (11, 1))]),
            wait: true
        }]
    );
    let fx = m.on(Event::Stopping { lease_holds: false }, t);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::SnapshotAndCommit { .. })),
        "nothing is committed with the lease lapsed: {fx:?}"
    );
}

#[test]
fn the_lifecycle_in_the_document_is_the_machines() {
    let doc = include_str!("../../../../docs/architecture.md");
    let start = doc
        .find("```mermaid\nstateDiagram-v2")
        .expect("docs/architecture.md has the partition lifecycle as a mermaid state diagram");
    let body = &doc[start..];
    let body = &body[..body[3..].find("```").map_or(body.len(), |e| e + 3)];
    let name = |s: &str| -> Option<Option<Phase>> {
        if s == "[*]" {
            return Some(None);
        }
        Phase::ALL.into_iter().find(|p| p.name() == s).map(Some)
    };
    let exit = |s: &str| {
        [Exit::Released, Exit::Abandoned]
            .into_iter()
            .find(|x| x.name() == s)
    };
    let mut drawn = BTreeSet::new();
    for line in body.lines().map(str::trim).filter(|l| l.contains("-->")) {
        let (from, rest) = line.split_once("-->").expect("an edge");
        let to = rest.split(':').next().unwrap_or_default().trim();
        let from = from.trim();
        let step = match (name(from), name(to), exit(to)) {
            (Some(f), Some(Some(t)), _) => Step::To(f, t),
            (Some(Some(f)), None, Some(x)) => Step::Out(f, x),
            // the exits end the diagram
            (None, Some(None), None) if exit(from).is_some() => continue,
            _ => panic!("docs/architecture.md: edge {line:?} names no phase of the machine"),
        };
        drawn.insert(step);
    }
    let machine: BTreeSet<Step> = TRANSITIONS.iter().copied().collect();
    assert_eq!(drawn, machine, "the diagram and the machine's transitions differ");
}

// --- property tests: random event sequences against invariants checked after every step ---

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
                            url: String::new(),
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
