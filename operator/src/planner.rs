//! The placement planner: `plan(current assignment, loads, policy) -> (next assignment, moves)`.
//! Pure and deterministic (ordered maps, ties broken by id, time passed in), so every rule is
//! property-tested in `planner/tests.rs`.
//!
//! A round does, in order:
//! 1. **Mandatory moves**: partitions whose owner is dead, draining or unknown go to live
//!    workers — spread over at least min(5, survivors, orphans) of them, then least-loaded
//!    first. They ignore the balancing budget and cooldowns: an unowned partition serves nobody.
//! 2. **Balancing** (only while the hottest live worker is at or above `active_floor`, and only
//!    when it is over `imbalance` × mean, or over `high_watermark` with the coldest worker below
//!    it and cooler by more than `imbalance`): best-fit moves from the hottest to the coldest
//!    worker, each strictly lowering the pair's maximum, until max/mean is within `imbalance`,
//!    within the round's budget (`max_move_fraction` of total load and `max_moves`), skipping
//!    partitions in cooldown. A mesh-wide overload moves nothing: that is the autoscaler's case.
//! 3. **Spreading** (only while the hottest live worker is below `active_floor`, and not with
//!    consolidation): partitions move from the worker holding the most to the one holding the
//!    fewest, least-loaded first, until counts are at most one apart, within the round's move
//!    count and skipping partitions in cooldown. A quiet mesh has no load to balance by, yet a
//!    worker left with nothing (a restart that kept the last run's table) must still get its
//!    share before traffic arrives.
//! 4. **Consolidation** (when enabled, e.g. with autoscaling): if every live worker is below
//!    `low_watermark` and the least-loaded worker can be emptied entirely this round (within
//!    `max_moves`, nothing in cooldown) without pushing anyone over `high_watermark`, move all
//!    its partitions away so it can be removed. The load-fraction budget does not apply: below
//!    the low watermark the absolute load moved is small, and a half-emptied worker frees nothing.

use std::collections::{BTreeMap, BTreeSet};

/// Partition id (of `chat.messages`).
pub type Partition = i32;

/// Rules of a balancing round.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Workers above this load are relieved.
    pub high_watermark: f64,
    /// Consolidation considers workers below this load.
    pub low_watermark: f64,
    /// No balancing while the hottest worker is below this load.
    pub active_floor: f64,
    /// Balancing aims for max/mean at or below this.
    pub imbalance: f64,
    /// Share of total load balancing may move per round.
    pub max_move_fraction: f64,
    /// Balancing moves per round.
    pub max_moves: usize,
    /// Milliseconds a moved partition is left alone by balancing.
    pub cooldown_ms: u64,
    /// Empty an under-loaded worker when that frees it entirely.
    pub consolidate: bool,
    /// A dead worker's partitions are spread over at least this many survivors (when possible).
    pub failover_spread: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            high_watermark: 0.8,
            low_watermark: 0.2,
            active_floor: 0.25,
            imbalance: 1.10,
            max_move_fraction: 0.09,
            max_moves: 16,
            cooldown_ms: 120_000,
            consolidate: false,
            failover_spread: 5,
        }
    }
}

/// What the balancer knows of a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    /// Worker id.
    pub id: String,
    /// Heartbeats arrive.
    pub alive: bool,
    /// It asked to be emptied (SIGTERM, node drain).
    pub draining: bool,
}

/// Owner and epoch of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Worker id.
    pub worker: String,
    /// Fencing token; increases on every owner change.
    pub epoch: u64,
}

/// Why a partition moves (the step name its handoff events carry).
pub use meshchat_wire::AssignReason as Reason;

/// One partition changing owner.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The partition.
    pub partition: Partition,
    /// Previous owner, if any.
    pub from: Option<String>,
    /// New owner.
    pub to: String,
    /// Epoch of the new ownership.
    pub epoch: u64,
    /// Load it carries.
    pub load: f64,
    /// Why.
    pub reason: Reason,
}

/// Everything a round looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Input {
    /// Every partition 0..n.
    pub partitions: Vec<Partition>,
    /// Current owners (partitions may be missing: unassigned).
    pub current: BTreeMap<Partition, Owner>,
    /// Known workers.
    pub workers: Vec<Worker>,
    /// Load per partition, in load-factor units of a worker (0.1 = a tenth of one worker).
    pub load: BTreeMap<Partition, f64>,
    /// When each partition last moved (ms).
    pub last_moved: BTreeMap<Partition, u64>,
    /// Now (ms).
    pub now_ms: u64,
}

/// The outcome of a round.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Owners after the round.
    pub next: BTreeMap<Partition, Owner>,
    /// What changed, in order.
    pub moves: Vec<Move>,
}

/// Load per live worker under an assignment.
pub fn worker_loads(
    owners: &BTreeMap<Partition, Owner>,
    load: &BTreeMap<Partition, f64>,
    live: &BTreeSet<String>,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = live.iter().map(|w| (w.clone(), 0.0)).collect();
    for (p, o) in owners {
        if let Some(l) = out.get_mut(&o.worker) {
            *l += load.get(p).copied().unwrap_or(0.0);
        }
    }
    out
}

struct State<'a> {
    next: BTreeMap<Partition, Owner>,
    moves: Vec<Move>,
    loads: BTreeMap<String, f64>,
    counts: BTreeMap<String, usize>,
    load: &'a BTreeMap<Partition, f64>,
}

impl State<'_> {
    fn part_load(&self, p: Partition) -> f64 {
        self.load.get(&p).copied().unwrap_or(0.0).max(0.0)
    }

    fn assign(&mut self, p: Partition, to: &str, reason: Reason) {
        let l = self.part_load(p);
        let prev = self.next.get(&p).cloned();
        let epoch = prev.as_ref().map_or(0, |o| o.epoch) + 1;
        if let Some(o) = &prev {
            if let Some(x) = self.loads.get_mut(&o.worker) {
                *x -= l;
            }
            if let Some(c) = self.counts.get_mut(&o.worker) {
                *c = c.saturating_sub(1);
            }
        }
        *self.loads.entry(to.to_string()).or_default() += l;
        *self.counts.entry(to.to_string()).or_default() += 1;
        self.next.insert(
            p,
            Owner {
                worker: to.to_string(),
                epoch,
            },
        );
        self.moves.push(Move {
            partition: p,
            from: prev.map(|o| o.worker),
            to: to.to_string(),
            epoch,
            load: l,
            reason,
        });
    }

    /// Live workers ordered coldest first (load, then partition count, then id).
    fn coldest_first(&self) -> Vec<String> {
        let mut ws: Vec<&String> = self.loads.keys().collect();
        ws.sort_by(|a, b| {
            let (la, lb) = (self.loads[*a], self.loads[*b]);
            la.total_cmp(&lb)
                .then(self.counts.get(*a).cmp(&self.counts.get(*b)))
                .then(a.cmp(b))
        });
        ws.into_iter().cloned().collect()
    }

    fn owned_by(&self, w: &str) -> Vec<Partition> {
        self.next
            .iter()
            .filter(|(_, o)| o.worker == w)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// Plans one round.
pub fn plan(input: &Input, policy: &Policy) -> Plan {
    let live: BTreeSet<String> = input
        .workers
        .iter()
        .filter(|w| w.alive && !w.draining)
        .map(|w| w.id.clone())
        .collect();
    let mut st = State {
        next: input.current.clone(),
        moves: Vec::new(),
        loads: worker_loads(&input.current, &input.load, &live),
        counts: live.iter().map(|w| (w.clone(), 0)).collect(),
        load: &input.load,
    };
    for o in input.current.values() {
        if let Some(c) = st.counts.get_mut(&o.worker) {
            *c += 1;
        }
    }
    if live.is_empty() {
        return Plan {
            next: st.next,
            moves: st.moves,
        };
    }
    mandatory(input, policy, &live, &mut st);
    let hottest = st.loads.values().copied().fold(0.0, f64::max);
    if hottest >= policy.active_floor {
        balance(input, policy, &mut st);
    } else if !policy.consolidate {
        spread(input, policy, &mut st);
    }
    if policy.consolidate {
        consolidate(input, policy, &mut st);
    }
    Plan {
        next: st.next,
        moves: st.moves,
    }
}

fn mandatory(input: &Input, policy: &Policy, live: &BTreeSet<String>, st: &mut State<'_>) {
    let status: BTreeMap<&str, &Worker> = input.workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut orphans: Vec<(Partition, Reason)> = input
        .partitions
        .iter()
        .filter_map(|p| match input.current.get(p) {
            None => Some((*p, Reason::Unassigned)),
            Some(o) if live.contains(&o.worker) => None,
            Some(o) => match status.get(o.worker.as_str()) {
                Some(w) if w.alive && w.draining => Some((*p, Reason::Drain)),
                _ => Some((*p, Reason::Failover)),
            },
        })
        .collect();
    // heaviest first, so the greedy fill is tight; ties by partition id
    orphans.sort_by(|a, b| {
        st.part_load(b.0)
            .total_cmp(&st.part_load(a.0))
            .then(a.0.cmp(&b.0))
    });
    // the first few go to distinct workers, so a failover spreads its burst
    let spread = policy.failover_spread.min(live.len()).min(orphans.len());
    let distinct: Vec<String> = st.coldest_first().into_iter().take(spread).collect();
    for (i, (p, reason)) in orphans.into_iter().enumerate() {
        let to = match distinct.get(i) {
            Some(w) => w.clone(),
            None => st.coldest_first().into_iter().next().unwrap_or_default(),
        };
        st.assign(p, &to, reason);
    }
}

fn in_cooldown(input: &Input, policy: &Policy, p: Partition, st: &State<'_>) -> bool {
    st.moves.iter().any(|m| m.partition == p)
        || input
            .last_moved
            .get(&p)
            .is_some_and(|t| input.now_ms.saturating_sub(*t) < policy.cooldown_ms)
}

fn balance(input: &Input, policy: &Policy, st: &mut State<'_>) {
    let total: f64 = st.loads.values().sum();
    let n = st.loads.len() as f64;
    if total <= 0.0 || n < 2.0 {
        return;
    }
    let mean = total / n;
    let budget = policy.max_move_fraction * total;
    let mut moved = 0.0;
    let mut count = 0usize;
    loop {
        if count >= policy.max_moves {
            return;
        }
        let order = st.coldest_first();
        let Some(cold) = order.first().cloned() else {
            return;
        };
        let lc = st.loads[&cold];
        // donors hottest first: the hottest may be unable to give (its one partition is bigger
        // than the gap), and the next one over the threshold still should
        let mut gave = None;
        for hot in order.iter().rev().filter(|w| **w != cold) {
            let lh = st.loads[hot];
            if !(lh > policy.high_watermark || lh > policy.imbalance * mean) {
                break; // the rest are cooler
            }
            // over the high watermark but not over the mean's tolerance: relieve it only onto a
            // worker with headroom that is cooler by more than that tolerance. When every worker
            // is about as hot (a mesh-wide overload) a move only trades measurement noise for a
            // handoff pause; the cure is more workers (the autoscaler), not reshuffling.
            let relievable = lc < policy.high_watermark && lh > policy.imbalance * lc;
            if lh <= policy.imbalance * mean && !relievable {
                continue;
            }
            // a worker that received in this round does not give: passing partitions along a
            // chain of workers is churn, and the next round sees fresher loads anyway
            let received = st
                .moves
                .iter()
                .any(|m| m.reason == Reason::Balance && &m.to == hot);
            if received {
                continue;
            }
            // best fit: the largest partition that moves no more than needed (hot stays at or
            // above the mean, cold at or below it); failing that, the smallest one that still
            // lowers max(hot, cold). Moving no more than needed keeps the round's budget for
            // other moves.
            let gap = lh - lc;
            let want = (lh - mean).min(mean - lc);
            let movable: Vec<(Partition, f64)> = st
                .owned_by(hot)
                .into_iter()
                .filter(|p| !in_cooldown(input, policy, *p, st))
                .map(|p| (p, st.part_load(p)))
                .filter(|(_, l)| *l > 0.0 && *l < gap && moved + l <= budget)
                .collect();
            let candidate = movable
                .iter()
                .filter(|(_, l)| *l <= want)
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .or_else(|| {
                    movable
                        .iter()
                        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                })
                .copied();
            if let Some(c) = candidate {
                gave = Some(c);
                break;
            }
        }
        let Some((p, l)) = gave else { return };
        st.assign(p, &cold, Reason::Balance);
        moved += l;
        count += 1;
    }
}

fn spread(input: &Input, policy: &Policy, st: &mut State<'_>) {
    // no load budget: below the floor the load moved is negligible; the move count and the
    // cooldowns bound the churn
    for _ in 0..policy.max_moves {
        // fewest partitions first; ties: coolest, then id
        let mut order = st.coldest_first();
        order.sort_by_key(|w| st.counts.get(w).copied().unwrap_or(0));
        let Some(fewest) = order.first().cloned() else {
            return;
        };
        let least = st.counts.get(&fewest).copied().unwrap_or(0);
        // donors: most partitions first, and only while more than one apart
        let donor = order.iter().rev().find_map(|w| {
            if st.counts.get(w).copied().unwrap_or(0) <= least + 1 {
                return None;
            }
            st.owned_by(w)
                .into_iter()
                .filter(|p| !in_cooldown(input, policy, *p, st))
                .min_by(|a, b| st.part_load(*a).total_cmp(&st.part_load(*b)).then(a.cmp(b)))
        });
        let Some(p) = donor else { return };
        st.assign(p, &fewest, Reason::Spread);
    }
}

fn consolidate(input: &Input, policy: &Policy, st: &mut State<'_>) {
    if st.loads.len() < 2 || st.loads.values().any(|l| *l >= policy.low_watermark) {
        return;
    }
    let order = st.coldest_first();
    let Some(victim) = order.first().cloned() else {
        return;
    };
    let parts = st.owned_by(&victim);
    if parts.is_empty()
        || parts.len() > policy.max_moves
        || parts.iter().any(|p| in_cooldown(input, policy, *p, st))
    {
        return;
    }
    // simulate: every receiver must stay under the high watermark
    let mut sim = st.loads.clone();
    sim.remove(&victim);
    let mut placed = Vec::new();
    for p in parts {
        let l = st.part_load(p);
        let Some((to, _)) = sim
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(k, v)| (k.clone(), *v))
        else {
            return;
        };
        let Some(slot) = sim.get_mut(&to) else { return };
        *slot += l;
        if *slot >= policy.high_watermark {
            return;
        }
        placed.push((p, to));
    }
    for (p, to) in placed {
        st.assign(p, &to, Reason::Consolidate);
    }
}

#[cfg(test)]
mod tests;
