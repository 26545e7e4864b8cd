//! The release side of the machine: abandoning without a write, the heartbeat lease, timers, and
//! releases that wait for the partition's answers at most for the handoff grace.

use std::time::{Duration, Instant};

use super::{Abandon, Announcement, Effect, Epoch, Exit, Partition, PartitionMachine, Phase, State};

// === impl PartitionMachine ===

impl PartitionMachine {
    /// Drops `p` without a word: answers cancelled; no snapshot, commit or release follows.
    pub(super) fn abandon(
        &mut self,
        p: Partition,
        to_epoch: Epoch,
        why: Abandon,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
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
    pub(super) fn lease(&mut self, lease_holds: bool, now: Instant, out: &mut Vec<Effect>) {
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
    pub(super) fn tick(&mut self, now: Instant, out: &mut Vec<Effect>) {
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
    pub(super) fn release_if_due(&mut self, p: Partition, now: Instant, out: &mut Vec<Effect>) {
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

    pub(super) fn release_written(
        &mut self,
        p: Partition,
        epoch: Epoch,
        ok: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
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
}
