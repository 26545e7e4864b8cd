//! The worker's load: LLM slots in use and answers waiting, smoothed over time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

/// Shared counters the answer tasks update and the sampler reads.
#[derive(Debug)]
pub struct Load {
    /// Concurrency limit.
    pub limit: u32,
    /// LLM calls in flight.
    pub in_flight: AtomicU32,
    /// Answers waiting for a slot.
    pub queued: AtomicU32,
    /// User messages handled, ever.
    pub handled: AtomicU64,
    smoothed: Mutex<Smoothed>,
}

#[derive(Debug, Default)]
struct Smoothed {
    load: Ewma,
    rate: Ewma,
    last_handled: u64,
}

// === impl Load ===

impl Load {
    /// Counters for a worker with `limit` LLM slots.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            handled: AtomicU64::new(0),
            smoothed: Mutex::new(Smoothed::default()),
        }
    }

    /// Takes one sample; call every `interval_secs`.
    pub fn sample(&self, interval_secs: f64) {
        let now = load_factor(
            self.in_flight.load(Ordering::Relaxed),
            self.queued.load(Ordering::Relaxed),
            self.limit,
        );
        let handled = self.handled.load(Ordering::Relaxed);
        if let Ok(mut s) = self.smoothed.lock() {
            s.load.update(now, 0.3);
            let delta = handled.saturating_sub(s.last_handled) as f64;
            s.last_handled = handled;
            s.rate.update(delta / interval_secs.max(1e-3), 0.3);
        }
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
        let l = Load::new(4);
        l.in_flight.store(2, Ordering::Relaxed);
        l.handled.store(10, Ordering::Relaxed);
        l.sample(1.0);
        assert_eq!(l.load_factor(), 0.5);
        assert_eq!(l.messages_per_second(), 10.0);
    }
}
