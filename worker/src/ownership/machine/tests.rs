use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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
        internal_url: Some(format!("http://{node}")),
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

/// A machine holding partition 0 live at epoch 1 with one answer running.
fn answering_on_0(t: Instant) -> PartitionMachine {
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
    m
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
    let mut m = answering_on_0(t);
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
    let mut m = answering_on_0(t);
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
fn a_move_in_stops_waiting_when_the_old_owner_dies_mid_handoff() {
    let t = Instant::now();
    let mut m = PartitionMachine::new(ME, timeouts());
    let a = table(3, &[(0, ME, 2, Some("a"), false), (1, ME, 4, Some("a"), false)]);
    assert!(m.on(Event::Assigned(a), t).is_empty());
    assert_eq!(m.awaiting_release(), vec![(0, 2), (1, 4)]);
    // "a"'s pod is gone: the balancer republishes partition 1's move as a failover
    let a = table(4, &[(0, ME, 2, Some("a"), false), (1, ME, 4, Some("a"), true)]);
    assert_eq!(
        m.on(Event::Assigned(a), t + RELEASE_TIMEOUT / 10),
        vec![Effect::ReadCommit {
            partition: 1,
            epoch: 4,
            after: Duration::ZERO
        }],
        "no release timeout to wait out"
    );
    assert_eq!(m.awaiting_release(), vec![(0, 2)]);
}

#[test]
fn a_failover_move_away_abandons_without_a_write() {
    let t = Instant::now();
    let mut m = answering_on_0(t);
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

mod properties;
