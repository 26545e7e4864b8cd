//! Placement quality of the planner alone (no I/O): Zipf-skewed conversation loads hashed into
//! partitions the way the mesh does it (Kafka's murmur2), rounds of `plan()` as the balancer
//! would run them (one every interval, cooldown respected), then a scale-out and a failover.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use meshchat_operator::planner::{self, Input, Owner, Partition, Policy, Worker};
use meshchat_wire::partition_for;
use serde::Serialize;

/// Sizes of one simulation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sizes {
    /// Conversations (Zipf ranks).
    pub conversations: usize,
    /// Partitions.
    pub partitions: i32,
    /// Workers.
    pub workers: usize,
    /// Zipf exponent.
    pub zipf_s: f64,
    /// Mean worker load the total is scaled to.
    pub mean_load: f64,
}

impl Sizes {
    /// Full size: 100 K conversations, 1024 partitions, 100 workers; Zipf exponent `s`.
    pub fn full(s: f64) -> Self {
        Self {
            conversations: 100_000,
            partitions: 1024,
            workers: 100,
            zipf_s: s,
            mean_load: 0.6,
        }
    }

    /// Seconds-long CI smoke size.
    pub fn smoke(s: f64) -> Self {
        Self {
            conversations: 5_000,
            partitions: 128,
            workers: 10,
            zipf_s: s,
            mean_load: 0.6,
        }
    }
}

/// One balancing round.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// 1-based.
    pub round: usize,
    /// max/mean worker load after the round.
    pub max_over_mean: f64,
    /// Share of the total load the round moved.
    pub moved_fraction: f64,
    /// Partitions moved.
    pub moves: usize,
    /// Time `plan()` took.
    pub decision_ms: f64,
}

/// What a simulation measured.
#[derive(Clone, Debug, Serialize)]
pub struct PlannerReport {
    /// Sizes simulated.
    pub sizes: Sizes,
    /// Busiest partition's share of the total load (the floor max/mean can reach).
    pub hottest_partition_share: f64,
    /// Lowest max/mean any placement can reach (the hottest partition alone on one worker).
    pub achievable_max_over_mean: f64,
    /// max/mean of the initial contiguous placement.
    pub initial_max_over_mean: f64,
    /// Balancing rounds from the initial placement.
    pub rounds: Vec<Round>,
    /// A worker joins the balanced mesh: its round.
    pub scale_out: Round,
    /// 1/(N+1): the least load a scale-out must move to give the new worker its share.
    pub scale_out_minimum_fraction: f64,
    /// The worker with the most partitions dies: its round.
    pub failover: Round,
    /// Survivors that received the dead worker's partitions.
    pub failover_receivers: usize,
}

/// Zipf conversation loads summed per partition, scaled so the mean worker load is `mean_load`.
pub fn partition_loads(s: &Sizes) -> BTreeMap<Partition, f64> {
    let mut load: BTreeMap<Partition, f64> = (0..s.partitions).map(|p| (p, 0.0)).collect();
    for rank in 1..=s.conversations {
        let p = partition_for(&format!("conv-{rank}"), s.partitions);
        *load.entry(p).or_default() += 1.0 / (rank as f64).powf(s.zipf_s);
    }
    let total: f64 = load.values().sum();
    let scale = s.mean_load * s.workers as f64 / total.max(f64::MIN_POSITIVE);
    load.values_mut().for_each(|l| *l *= scale);
    load
}

fn max_over_mean(
    owners: &BTreeMap<Partition, Owner>,
    load: &BTreeMap<Partition, f64>,
    live: &BTreeSet<String>,
) -> f64 {
    let loads = planner::worker_loads(owners, load, live);
    let max = loads.values().copied().fold(0.0, f64::max);
    let mean = loads.values().sum::<f64>() / loads.len().max(1) as f64;
    max / mean.max(f64::MIN_POSITIVE)
}

/// The balancer's loop over `plan()` for one simulated round.
struct Sim {
    input: Input,
    policy: Policy,
    total: f64,
    interval_ms: u64,
}

impl Sim {
    fn live(&self) -> BTreeSet<String> {
        self.input
            .workers
            .iter()
            .filter(|w| w.alive && !w.draining)
            .map(|w| w.id.clone())
            .collect()
    }

    fn round(&mut self, n: usize) -> Round {
        self.input.now_ms += self.interval_ms;
        let began = Instant::now();
        let plan = planner::plan(&self.input, &self.policy);
        let decision_ms = began.elapsed().as_secs_f64() * 1000.0;
        let moved: f64 = plan.moves.iter().map(|m| m.load).sum();
        for m in &plan.moves {
            self.input.last_moved.insert(m.partition, self.input.now_ms);
        }
        self.input.current = plan.next;
        let live = self.live();
        Round {
            round: n,
            max_over_mean: max_over_mean(&self.input.current, &self.input.load, &live),
            // (+ 0.0: an empty sum is -0.0)
            moved_fraction: moved / self.total.max(f64::MIN_POSITIVE) + 0.0,
            moves: plan.moves.len(),
            decision_ms,
        }
    }
}

fn worker(i: usize) -> Worker {
    Worker {
        id: format!("w{i:03}"),
        alive: true,
        draining: false,
    }
}

/// Runs the simulation: `rounds` balancing rounds from a contiguous placement, then a scale-out
/// (after the mesh settled), then a failover.
pub fn measure(s: Sizes, rounds: usize) -> PlannerReport {
    let load = partition_loads(&s);
    let total: f64 = load.values().sum();
    let hottest = load.values().copied().fold(0.0, f64::max);
    let mean = total / s.workers as f64;
    let workers: Vec<Worker> = (0..s.workers).map(worker).collect();
    // contiguous ranges: what a static split by partition number gives
    let current: BTreeMap<Partition, Owner> = (0..s.partitions)
        .map(|p| {
            let w = (p as usize * s.workers) / s.partitions as usize;
            (
                p,
                Owner {
                    worker: workers[w].id.clone(),
                    epoch: 1,
                },
            )
        })
        .collect();
    let policy = Policy {
        // the planner's per-round cap is a share of the load; the count cap scales with the mesh
        max_moves: s.partitions as usize,
        ..Policy::default()
    };
    let mut sim = Sim {
        input: Input {
            partitions: (0..s.partitions).collect(),
            current,
            workers,
            load,
            last_moved: BTreeMap::new(),
            now_ms: 0,
        },
        policy,
        total,
        interval_ms: 30_000,
    };
    let initial = max_over_mean(&sim.input.current, &sim.input.load, &sim.live());
    let balance: Vec<Round> = (1..=rounds).map(|n| sim.round(n)).collect();
    // settle past every cooldown, then a worker joins
    for n in rounds + 1..rounds + 6 {
        sim.round(n);
    }
    sim.input.now_ms += sim.policy.cooldown_ms;
    sim.input.workers.push(worker(s.workers));
    let scale_out = sim.round(1);
    for n in 2..6 {
        sim.round(n);
    }
    sim.input.now_ms += sim.policy.cooldown_ms;
    // the worker with the most partitions dies
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for o in sim.input.current.values() {
        *counts.entry(&o.worker).or_default() += 1;
    }
    let victim = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(w, _)| (*w).clone())
        .unwrap_or_default();
    let orphans: BTreeSet<Partition> = sim
        .input
        .current
        .iter()
        .filter(|(_, o)| o.worker == victim)
        .map(|(p, _)| *p)
        .collect();
    for w in sim.input.workers.iter_mut().filter(|w| w.id == victim) {
        w.alive = false;
    }
    let failover = sim.round(1);
    let receivers: BTreeSet<&String> = orphans
        .iter()
        .filter_map(|p| sim.input.current.get(p).map(|o| &o.worker))
        .collect();
    PlannerReport {
        sizes: s,
        hottest_partition_share: hottest / total.max(f64::MIN_POSITIVE),
        achievable_max_over_mean: (hottest / mean).max(1.0),
        initial_max_over_mean: initial,
        rounds: balance,
        scale_out,
        scale_out_minimum_fraction: 1.0 / (s.workers as f64 + 1.0),
        failover,
        failover_receivers: receivers.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoke_simulation_balances_and_reports_every_case() {
        let r = measure(Sizes::smoke(1.0), 3);
        assert_eq!(r.rounds.len(), 3);
        assert!(r.initial_max_over_mean > r.rounds[1].max_over_mean, "{r:?}");
        assert!(r.scale_out.moves > 0, "the new worker receives partitions");
        assert!(r.failover.moves > 0 && r.failover_receivers >= 1);
        let total: f64 = partition_loads(&Sizes::smoke(1.0)).values().sum();
        assert!((total - 0.6 * 10.0).abs() < 1e-9);
    }
}
