//! The take-over side of the machine: what is newly assigned is awaited or acquired (the commit
//! read before the fence), replayed and served; what no longer is starts its release.

use std::time::{Duration, Instant};

use super::{
    Abandon, Announcement, Effect, Epoch, Exit, Part, Partition, PartitionMachine, Phase, State, Step,
};

// === impl PartitionMachine ===

impl PartitionMachine {
    pub(super) fn acquiring(&mut self, partition: Partition, epoch: Epoch) -> Option<&mut Part> {
        self.parts
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch && matches!(p.state, State::Acquiring { .. }))
    }

    /// Reads the commit (again, after a failure or a timeout) before anything is written.
    pub(super) fn start_acquiring(
        &mut self,
        p: Partition,
        now: Instant,
        after: Duration,
        out: &mut Vec<Effect>,
    ) {
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
    pub(super) fn reconcile(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let owned: Vec<(Partition, Epoch)> = if self.suspended {
            Vec::new()
        } else {
            self.assignment.owned.iter().map(|(p, e)| (*p, *e)).collect()
        };
        for (p, epoch) in owned {
            match self.parts.get_mut(&p) {
                Some(part) if part.phase() == Phase::Releasing => part.reacquire = true,
                Some(part) => {
                    part.epoch = part.epoch.max(epoch);
                    // the old owner we wait for died mid-handoff (the balancer turned the move
                    // into a failover): no release will come; fence it out now
                    let failover = self.assignment.owners.get(&p).is_some_and(|i| i.failover);
                    if failover && matches!(part.state, State::Wanted { .. }) {
                        self.start_acquiring(p, now, Duration::ZERO, out);
                    }
                }
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

    pub(super) fn fence_written(
        &mut self,
        p: Partition,
        epoch: Epoch,
        end: i64,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
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

    pub(super) fn go_live(
        &mut self,
        p: Partition,
        replayed: u64,
        since: Instant,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
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

    pub(super) fn consumed(&mut self, p: Partition, offset: i64, now: Instant, out: &mut Vec<Effect>) {
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
}
