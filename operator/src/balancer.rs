//! The balancer's state: what it heard from workers, the table it published, and the rounds
//! that turn those into the next table. Pure (time passed in); `balancer/kafka.rs` is the shell.

mod task;

pub use task::{
    BalancerSettings, LocalOptions, Report, balance, balance_locally, policy_of, shutdown_signal,
};

use std::collections::{BTreeMap, BTreeSet};

use meshchat_wire::{
    AssignmentTable, LoadReport, MigrateRequest, PartitionAssignment, SCHEMA_VERSION, WorkerInfo,
};

use crate::planner::{self, Input, Move, Owner, Policy, Reason, Worker};

/// Balancer timing, from the ChatAgent's `rebalance` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundTiming {
    /// Milliseconds between periodic rounds.
    pub interval_ms: u64,
    /// Milliseconds without a heartbeat before a worker is dead.
    pub heartbeat_timeout_ms: u64,
}

/// A partition's load averaged over heartbeats: one report's in-flight count is a snapshot, and
/// balancing on snapshots moves partitions back and forth.
#[derive(Clone, Copy, Debug)]
struct Smoothed {
    load: f64,
    at_ms: u64,
}

#[derive(Clone, Debug)]
struct Seen {
    report: LoadReport,
    at_ms: u64,
}

/// Everything the balancer knows.
#[derive(Debug)]
pub struct Balancer {
    agent: String,
    partitions: i32,
    policy: Policy,
    timing: RoundTiming,
    started_ms: u64,
    workers: BTreeMap<String, Seen>,
    table: AssignmentTable,
    last_moved: BTreeMap<i32, u64>,
    /// When a client's migrate request last moved each partition: requests go through the
    /// cooldown too, so nobody can make a partition ping-pong between workers.
    last_requested: BTreeMap<i32, u64>,
    last_round_ms: u64,
    membership: BTreeSet<(String, bool, bool)>,
    smoothed: BTreeMap<i32, Smoothed>,
    /// Partition moves made since start.
    pub migrations: u64,
    last_published_ms: Option<u64>,
    /// The latest table carries another heartbeat timeout than ours: workers would size their
    /// lease by it, so the first round republishes the table with ours.
    retime: bool,
    /// Workers Kubernetes reported gone (pod deleted, container terminated), and when (unix
    /// ms): dead at once, until a heartbeat sent after that (a new process of the same name).
    gone: BTreeMap<String, u64>,
    /// Moves away from a gone worker were turned into failovers: publish even if nothing moves.
    retable: bool,
}

/// What the balancer knows of one worker, for status and dashboards.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSummary {
    /// Worker id (pod name).
    pub id: String,
    /// Partitions the published table gives it.
    pub partitions: Vec<i32>,
    /// Its last reported load factor.
    pub load: f64,
    /// Heard from within the heartbeat timeout.
    pub alive: bool,
    /// Reported draining.
    pub draining: bool,
}

/// The balancer's state for a ChatAgent's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Generation of the latest table.
    pub generation: u64,
    /// Workers heard from or owning partitions.
    pub workers: Vec<WorkerSummary>,
    /// Partition moves since the balancer started.
    pub migrations: u64,
    /// When it last published a table (unix ms).
    pub last_rebalance_ms: Option<u64>,
}

impl Summary {
    /// Mean load factor over live workers.
    pub fn mean_load(&self) -> Option<f64> {
        let live: Vec<f64> = self.workers.iter().filter(|w| w.alive).map(|w| w.load).collect();
        (!live.is_empty()).then(|| live.iter().sum::<f64>() / live.len() as f64)
    }
}

/// A table to publish and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The new table.
    pub table: AssignmentTable,
    /// The moves it makes.
    pub moves: Vec<Move>,
}

// === impl Balancer ===

impl Balancer {
    /// A balancer for `agent` that continues from `table` (the latest published, if any).
    pub fn new(
        agent: &str,
        partitions: i32,
        policy: Policy,
        timing: RoundTiming,
        table: Option<AssignmentTable>,
        now_ms: u64,
    ) -> Self {
        let table = table.unwrap_or_else(|| AssignmentTable {
            v: SCHEMA_VERSION,
            agent: agent.to_string(),
            heartbeat_timeout_ms: timing.heartbeat_timeout_ms,
            ..Default::default()
        });
        let retime = table.generation > 0 && table.heartbeat_timeout_ms != timing.heartbeat_timeout_ms;
        Self {
            agent: agent.to_string(),
            partitions,
            policy,
            timing,
            started_ms: now_ms,
            workers: BTreeMap::new(),
            table,
            last_moved: BTreeMap::new(),
            last_requested: BTreeMap::new(),
            last_round_ms: now_ms,
            membership: BTreeSet::new(),
            smoothed: BTreeMap::new(),
            migrations: 0,
            last_published_ms: None,
            retime,
            gone: BTreeMap::new(),
            retable: false,
        }
    }

    /// The latest table.
    #[cfg(test)]
    pub fn table(&self) -> &AssignmentTable {
        &self.table
    }

    /// What status shows.
    pub fn summary(&self, now_ms: u64) -> Summary {
        let mut workers: BTreeMap<String, WorkerSummary> = self
            .workers
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    WorkerSummary {
                        id: id.clone(),
                        partitions: Vec::new(),
                        load: s.report.load_factor,
                        alive: self.alive(id, now_ms),
                        draining: s.report.draining,
                    },
                )
            })
            .collect();
        for a in &self.table.partitions {
            workers
                .entry(a.owner.clone())
                .or_insert_with(|| WorkerSummary {
                    id: a.owner.clone(),
                    partitions: Vec::new(),
                    load: 0.0,
                    alive: false,
                    draining: false,
                })
                .partitions
                .push(a.partition);
        }
        Summary {
            generation: self.table.generation,
            workers: workers.into_values().collect(),
            migrations: self.migrations,
            last_rebalance_ms: self.last_published_ms,
        }
    }

    /// A worker's heartbeat.
    pub fn observe(&mut self, report: LoadReport, now_ms: u64) {
        if let Some(gone_ms) = self.gone.get(&report.worker_id) {
            // one sent before the pod went (read late) is the dead process's: it must not
            // bring the worker back
            let sent_ms = (report.timestamp.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
            if sent_ms <= *gone_ms {
                return;
            }
            self.gone.remove(&report.worker_id);
        }
        // exponential average with the round interval as time constant: a round sees the load
        // of about the last round, and a burst shorter than that barely moves it
        let tau = self.timing.interval_ms.max(1000) as f64;
        for (p, now) in report_loads(&report) {
            let e = self.smoothed.entry(p).or_insert(Smoothed {
                load: now,
                at_ms: now_ms,
            });
            let dt = now_ms.saturating_sub(e.at_ms) as f64;
            let alpha = 1.0 - (-dt / tau).exp();
            e.load += alpha * (now - e.load);
            e.at_ms = now_ms;
        }
        self.workers.insert(
            report.worker_id.clone(),
            Seen {
                report,
                at_ms: now_ms,
            },
        );
    }

    fn alive(&self, id: &str, now_ms: u64) -> bool {
        !self.gone.contains_key(id)
            && self
                .workers
                .get(id)
                .is_some_and(|s| now_ms.saturating_sub(s.at_ms) <= self.timing.heartbeat_timeout_ms)
    }

    /// Kubernetes says worker `id`'s process is gone (its pod was deleted, its container
    /// terminated): it is dead from now on, without waiting out the heartbeat timeout, so the
    /// next round fails its partitions over. A heartbeat sent later (a new pod of the same name)
    /// brings it back. `now_ms` is wall-clock time, as heartbeats carry.
    pub fn gone(&mut self, id: &str, now_ms: u64) {
        self.gone.insert(id.to_string(), now_ms);
        // its planned handoffs may be under way: their new owners wait for a release that will
        // not come; marked failovers, they fence it out at once (harmless once a handoff is done)
        for a in &mut self.table.partitions {
            if a.from.as_deref() == Some(id) && a.owner != id && !a.failover {
                a.failover = true;
                self.retable = true;
            }
        }
    }

    fn warming_up(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.started_ms) < self.timing.heartbeat_timeout_ms
    }

    /// Runs a round if one is due: periodically, or at once when a worker appeared, died or
    /// started draining. Returns the table to publish when anything moves.
    pub fn tick(&mut self, now_ms: u64) -> Option<Outcome> {
        // before anyone can be declared dead under the new timeout, workers must size their
        // lease by it
        if self.retime {
            self.retime = false;
            return Some(self.publish(self.owners(), Vec::new(), now_ms));
        }
        // after a (re)start, give every worker one heartbeat timeout to be heard from, so
        // nobody is declared dead for having been unheard by a fresh balancer
        if self.warming_up(now_ms) {
            return None;
        }
        let membership: BTreeSet<(String, bool, bool)> = self
            .workers
            .iter()
            .map(|(id, s)| (id.clone(), self.alive(id, now_ms), s.report.draining))
            .collect();
        let changed = membership != self.membership || self.retable;
        let due = now_ms.saturating_sub(self.last_round_ms) >= self.timing.interval_ms;
        let unassigned = self.table.partitions.len() < self.partitions as usize;
        if !(changed || due || unassigned) {
            return None;
        }
        self.membership = membership;
        self.last_round_ms = now_ms;
        let input = self.input(now_ms);
        let plan = planner::plan(&input, &self.policy);
        let retable = std::mem::take(&mut self.retable);
        if plan.moves.is_empty() && !retable {
            return None;
        }
        Some(self.publish(plan.next, plan.moves, now_ms))
    }

    /// Applies a client's migrate request at once (it bypasses the balancing budget: a person
    /// asked for it). Err explains a refusal.
    pub fn migrate(&mut self, req: &MigrateRequest, now_ms: u64) -> Result<Option<Outcome>, String> {
        if !self.alive(&req.target, now_ms) {
            return Err(format!("target {:?} is not alive", req.target));
        }
        if self.workers.get(&req.target).is_some_and(|s| s.report.draining) {
            return Err(format!("target {:?} is draining", req.target));
        }
        let mut next = self.owners();
        let mut moves = Vec::new();
        for p in &req.partitions {
            if !(0..self.partitions).contains(p) {
                return Err(format!("partition {p} does not exist"));
            }
            let prev = next.get(p).cloned();
            if prev.as_ref().is_some_and(|o| o.worker == req.target) {
                continue;
            }
            let owner_alive = prev.as_ref().is_some_and(|o| self.alive(&o.worker, now_ms));
            if let Some(t) = self.last_requested.get(p)
                && owner_alive
                && now_ms.saturating_sub(*t) < self.policy.cooldown_ms
            {
                return Err(format!(
                    "partition {p} was moved on request {} s ago; the cooldown is {} s",
                    now_ms.saturating_sub(*t) / 1000,
                    self.policy.cooldown_ms / 1000
                ));
            }
            let epoch = prev.as_ref().map_or(0, |o| o.epoch) + 1;
            let from = prev.map(|o| o.worker);
            let reason = match &from {
                Some(f) if !self.alive(f, now_ms) => Reason::Failover,
                _ => Reason::Requested,
            };
            next.insert(
                *p,
                Owner {
                    worker: req.target.clone(),
                    epoch,
                },
            );
            moves.push(Move {
                partition: *p,
                from,
                to: req.target.clone(),
                epoch,
                load: 0.0,
                reason,
            });
        }
        if moves.is_empty() {
            return Ok(None);
        }
        for m in &moves {
            self.last_requested.insert(m.partition, now_ms);
        }
        Ok(Some(self.publish(next, moves, now_ms)))
    }

    fn owners(&self) -> BTreeMap<i32, Owner> {
        self.table
            .partitions
            .iter()
            .map(|a| {
                (
                    a.partition,
                    Owner {
                        worker: a.owner.clone(),
                        epoch: a.epoch,
                    },
                )
            })
            .collect()
    }

    fn input(&self, now_ms: u64) -> Input {
        let mut workers: BTreeMap<String, Worker> = self
            .workers
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    Worker {
                        id: id.clone(),
                        alive: self.alive(id, now_ms),
                        draining: s.report.draining,
                    },
                )
            })
            .collect();
        // owners never heard from are dead (the warm-up is over)
        for a in &self.table.partitions {
            workers.entry(a.owner.clone()).or_insert_with(|| Worker {
                id: a.owner.clone(),
                alive: false,
                draining: false,
            });
        }
        // smoothed loads of the partitions live workers report
        let mut load = BTreeMap::new();
        for s in self
            .workers
            .values()
            .filter(|s| self.alive(&s.report.worker_id, now_ms))
        {
            for p in &s.report.partitions {
                if let Some(e) = self.smoothed.get(&p.partition) {
                    load.insert(p.partition, e.load);
                }
            }
        }
        Input {
            partitions: (0..self.partitions).collect(),
            current: self.owners(),
            workers: workers.into_values().collect(),
            load,
            last_moved: self.last_moved.clone(),
            now_ms,
        }
    }

    fn publish(&mut self, next: BTreeMap<i32, Owner>, moves: Vec<Move>, now_ms: u64) -> Outcome {
        let moved: BTreeMap<i32, &Move> = moves.iter().map(|m| (m.partition, m)).collect();
        let previous: BTreeMap<i32, &PartitionAssignment> =
            self.table.partitions.iter().map(|a| (a.partition, a)).collect();
        let partitions = next
            .iter()
            .map(|(p, o)| match moved.get(p) {
                Some(m) => PartitionAssignment {
                    partition: *p,
                    owner: o.worker.clone(),
                    epoch: o.epoch,
                    from: m.from.clone(),
                    failover: m.reason == Reason::Failover,
                },
                None => previous
                    .get(p)
                    .map(|a| (*a).clone())
                    .unwrap_or(PartitionAssignment {
                        partition: *p,
                        owner: o.worker.clone(),
                        epoch: o.epoch,
                        from: None,
                        failover: false,
                    }),
            })
            .collect::<Vec<_>>();
        let owns = |id: &str| partitions.iter().any(|a| a.owner == id);
        // owners not heard from since this balancer started keep the address the last table had
        let mut workers: BTreeMap<String, WorkerInfo> = self
            .table
            .workers
            .iter()
            .filter(|(id, _)| owns(id))
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect();
        for (id, s) in &self.workers {
            if owns(id) || self.alive(id, now_ms) {
                let info = WorkerInfo {
                    address: s.report.address.clone(),
                    internal_address: s.report.internal_address.clone(),
                };
                workers.insert(id.clone(), info);
            }
        }
        for m in &moves {
            self.last_moved.insert(m.partition, now_ms);
        }
        self.migrations += moves.len() as u64;
        self.last_published_ms = Some(now_ms);
        self.table = AssignmentTable {
            v: SCHEMA_VERSION,
            agent: self.agent.clone(),
            generation: self.table.generation + 1,
            partitions,
            workers,
            heartbeat_timeout_ms: self.timing.heartbeat_timeout_ms,
        };
        Outcome {
            table: self.table.clone(),
            moves,
        }
    }
}

/// A report's per-partition loads: the worker's load factor shared out by each partition's
/// messages/s and in-flight calls (a floor keeps idle partitions distinguishable).
fn report_loads(report: &LoadReport) -> Vec<(i32, f64)> {
    let weights: Vec<(i32, f64)> = report
        .partitions
        .iter()
        .map(|p| (p.partition, p.messages_per_s + f64::from(p.in_flight) + 1e-3))
        .collect();
    let sum: f64 = weights.iter().map(|(_, w)| w).sum();
    weights
        .into_iter()
        .map(|(p, w)| (p, report.load_factor * w / sum.max(f64::MIN_POSITIVE)))
        .collect()
}

#[cfg(test)]
mod tests;
