//! The worker's load: answers waiting for an LLM slot and holding one (the one tracker of
//! answers in flight, which keeps the Prometheus gauges too), user messages handled, and
//! per-partition rates for heartbeats, smoothed over time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use prometheus_client::metrics::gauge::Gauge;

/// The Prometheus gauges the load keeps current.
#[derive(Clone, Debug, Default)]
pub struct LoadGauges {
    /// Answers waiting for an LLM slot.
    pub queued: Gauge,
    /// LLM calls in flight.
    pub running: Gauge,
    /// The smoothed load factor, as heartbeats report it (what autoscalers target).
    pub load_factor: Gauge<f64, AtomicU64>,
    /// Partitions this worker owns.
    pub owned_partitions: Gauge,
}

use crate::ownership::Partition;

/// Load factor from instantaneous counts: the share of the concurrency limit in use, plus the
/// backlog measured in limits. 0 = idle, 1 = every slot busy, above 1 = answers are queueing.
pub fn load_factor(in_flight: u32, queued: u32, limit: u32) -> f64 {
    let limit = f64::from(limit.max(1));
    (f64::from(in_flight) + f64::from(queued)) / limit
}

/// Exponentially weighted moving average.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    value: f64,
    primed: bool,
}

// === impl Ewma ===

impl Ewma {
    /// Folds in `sample` with weight `alpha` (0..=1).
    pub fn update(&mut self, sample: f64, alpha: f64) -> f64 {
        self.value = if self.primed {
            alpha * sample + (1.0 - alpha) * self.value
        } else {
            sample
        };
        self.primed = true;
        self.value
    }

    /// Current value.
    pub fn get(&self) -> f64 {
        self.value
    }
}

/// Messages and completion tokens of one partition, ever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionCounts {
    /// User messages handled.
    pub messages: u64,
    /// Completion tokens written.
    pub tokens: u64,
}

/// Shared counters the owner and its answers update, and heartbeats, status and the sampler read.
#[derive(Debug)]
pub struct Load {
    /// Concurrency limit (LLM slots).
    pub limit: u32,
    queued: AtomicU32,
    running: AtomicU32,
    gauges: LoadGauges,
    handled: AtomicU64,
    per_partition: Mutex<BTreeMap<Partition, PartitionCounts>>,
    /// Records behind the log's end per held partition, at the last lag query.
    lags: Mutex<BTreeMap<Partition, i64>>,
    smoothed: Mutex<Smoothed>,
}

#[derive(Debug, Default)]
struct Smoothed {
    load: Ewma,
    rate: Ewma,
    last_handled: u64,
}

/// An answer waiting for an LLM slot, counted until dropped.
#[must_use]
pub struct Queued<'a>(&'a Load);

/// An answer holding an LLM slot, counted until dropped.
#[must_use]
pub struct Running<'a>(&'a Load);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
        self.0.gauges.queued.dec();
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.gauges.running.dec();
    }
}

// === impl Load ===

impl Load {
    /// Counters for a worker with `limit` LLM slots, mirrored into `gauges`.
    pub fn new(limit: u32, gauges: LoadGauges) -> Self {
        Self {
            limit,
            queued: AtomicU32::new(0),
            running: AtomicU32::new(0),
            gauges,
            handled: AtomicU64::new(0),
            per_partition: Mutex::new(BTreeMap::new()),
            lags: Mutex::new(BTreeMap::new()),
            smoothed: Mutex::new(Smoothed::default()),
        }
    }

    /// An answer starts waiting for a slot.
    pub fn queued(&self) -> Queued<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.gauges.queued.inc();
        Queued(self)
    }

    /// An answer got a slot and calls the LLM.
    pub fn running(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.gauges.running.inc();
        Running(self)
    }

    /// Answers waiting for a slot now.
    pub fn queued_now(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Records each held partition's owner is behind the log's end (the last query's).
    pub fn set_lags(&self, lags: &[(Partition, i64)]) {
        let mut l = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        l.clear();
        l.extend(lags.iter().copied());
    }

    /// Partitions with a measured lag.
    pub fn lagged_partitions(&self) -> Vec<Partition> {
        self.lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Forgets the lag of partitions no longer held.
    pub fn forget_lags(&self, gone: &[Partition]) {
        let mut l = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        for p in gone {
            l.remove(p);
        }
    }

    /// Records partition `p` is behind, if held and measured.
    pub fn lag(&self, p: Partition) -> Option<i64> {
        self.lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&p)
            .copied()
    }

    /// Records this worker is behind over all its partitions, as last measured.
    pub fn total_lag(&self) -> i64 {
        self.lags.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// LLM calls running now.
    pub fn running_now(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// A user message of `partition` was handled.
    pub fn message(&self, partition: Partition) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.with(partition, |c| c.messages += 1);
    }

    /// `n` completion tokens were written for `partition`.
    pub fn tokens(&self, partition: Partition, n: u64) {
        self.with(partition, |c| c.tokens += n);
    }

    /// Every partition's counts so far.
    pub fn partition_counts(&self) -> BTreeMap<Partition, PartitionCounts> {
        self.per_partition.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn with(&self, p: Partition, f: impl FnOnce(&mut PartitionCounts)) {
        if let Ok(mut m) = self.per_partition.lock() {
            f(m.entry(p).or_default());
        }
    }

    /// Takes one sample; call every `interval_secs`.
    pub fn sample(&self, interval_secs: f64) {
        let now = load_factor(self.running_now(), self.queued_now(), self.limit);
        let handled = self.handled.load(Ordering::Relaxed);
        if let Ok(mut s) = self.smoothed.lock() {
            s.load.update(now, 0.3);
            let delta = handled.saturating_sub(s.last_handled) as f64;
            s.last_handled = handled;
            s.rate.update(delta / interval_secs.max(1e-3), 0.3);
            self.gauges.load_factor.set(s.load.get());
        }
    }

    /// This worker now owns `n` partitions.
    pub fn set_owned(&self, n: usize) {
        self.gauges
            .owned_partitions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Smoothed load factor.
    pub fn load_factor(&self) -> f64 {
        self.smoothed.lock().map(|s| s.load.get()).unwrap_or_default()
    }

    /// Smoothed user messages handled per second.
    pub fn messages_per_second(&self) -> f64 {
        self.smoothed.lock().map(|s| s.rate.get()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(limit: u32) -> Load {
        Load::new(limit, LoadGauges::default())
    }

    #[test]
    fn load_factor_blends_backlog() {
        assert_eq!(load_factor(0, 0, 8), 0.0);
        assert_eq!(load_factor(4, 0, 8), 0.5);
        assert_eq!(load_factor(8, 8, 8), 2.0);
    }

    #[test]
    fn ewma_converges() {
        let mut e = Ewma::default();
        assert_eq!(e.update(10.0, 0.5), 10.0);
        for _ in 0..50 {
            e.update(2.0, 0.5);
        }
        assert!((e.get() - 2.0).abs() < 1e-6);
    }

    #[test]
    fn sampling_reflects_counters() {
        let l = load(4);
        let (_a, _b) = (l.running(), l.running());
        for _ in 0..10 {
            l.message(3);
        }
        l.sample(1.0);
        assert_eq!(l.load_factor(), 0.5);
        assert_eq!(l.gauges.load_factor.get(), 0.5, "the gauge autoscalers read");
        assert_eq!(l.messages_per_second(), 10.0);
        assert_eq!(l.partition_counts()[&3].messages, 10);
    }

    #[test]
    fn lags_of_partitions_gone_are_forgotten() {
        let l = load(4);
        l.set_lags(&[(1, 5), (2, 7)]);
        assert_eq!(l.lagged_partitions(), [1, 2]);
        l.forget_lags(&[1]);
        assert_eq!((l.lagged_partitions(), l.total_lag()), (vec![2], 7));
    }

    #[test]
    fn guards_keep_counts_and_gauges_together() {
        let gauges = LoadGauges::default();
        let (queued, running) = (gauges.queued.clone(), gauges.running.clone());
        let l = Load::new(2, gauges);
        let q = l.queued();
        assert_eq!((l.queued_now(), queued.get()), (1, 1));
        let r = l.running();
        drop(q);
        assert_eq!(
            (l.queued_now(), queued.get(), l.running_now(), running.get()),
            (0, 0, 1, 1)
        );
        drop(r);
        assert_eq!((l.running_now(), running.get()), (0, 0));
    }
}
