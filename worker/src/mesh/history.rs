//! Each worker's load over the last minutes, from its heartbeats: what the mesh page draws.
//! One sample per [`STEP_MS`] (the latest report within a step stands for it), for
//! [`KEEP_MS`], so a page opened now shows the minutes before it.

use std::collections::VecDeque;

/// Width of one sample.
pub const STEP_MS: u64 = 5_000;
/// How far back samples are kept.
pub const KEEP_MS: u64 = 10 * 60 * 1000;

/// One sample: when (unix ms), load factor, user messages per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Unix ms of the report.
    pub at_ms: u64,
    /// The worker's load factor.
    pub load: f64,
    /// User messages per second over its partitions.
    pub messages_per_s: f64,
}

/// One worker's samples, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadHistory {
    samples: VecDeque<Sample>,
}

impl LoadHistory {
    /// Adds a report's figures; reports arriving out of order (older than the latest) are
    /// dropped.
    pub fn record(&mut self, s: Sample) {
        match self.samples.back_mut() {
            Some(last) if s.at_ms < last.at_ms => return,
            Some(last) if s.at_ms / STEP_MS == last.at_ms / STEP_MS => *last = s,
            _ => self.samples.push_back(s),
        }
        while self
            .samples
            .front()
            .is_some_and(|f| s.at_ms.saturating_sub(f.at_ms) > KEEP_MS)
        {
            self.samples.pop_front();
        }
    }

    /// When the newest sample was taken (unix ms).
    pub fn newest(&self) -> Option<u64> {
        self.samples.back().map(|s| s.at_ms)
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(ms: u64) -> Sample {
        Sample {
            at_ms: ms,
            load: ms as f64,
            messages_per_s: 1.0,
        }
    }

    #[test]
    fn one_sample_per_step_the_latest_standing_for_it() {
        let mut h = LoadHistory::default();
        for ms in [0, 1_000, 4_999, 5_000, 9_000, 12_000] {
            h.record(at(ms));
        }
        let kept: Vec<u64> = h.samples().iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, vec![4_999, 9_000, 12_000]);
        h.record(at(8_000));
        assert_eq!(h.samples().len(), 3, "an older report is dropped");
    }

    proptest! {
        /// Whatever the heartbeat rhythm: samples ascend, at most one per step, none older
        /// than the window before the newest, and so at most window/step + 1 of them.
        #[test]
        fn bounded_and_ordered(gaps in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut h = LoadHistory::default();
            let mut now = 0;
            for g in gaps {
                now += g;
                h.record(at(now));
            }
            let s = h.samples();
            prop_assert!(s.len() as u64 <= KEEP_MS / STEP_MS + 1);
            prop_assert!(s.windows(2).all(|w| w[0].at_ms / STEP_MS < w[1].at_ms / STEP_MS));
            prop_assert!(s.iter().all(|x| now - x.at_ms <= KEEP_MS));
            prop_assert_eq!(s.last().map(|x| x.at_ms), Some(now));
            prop_assert_eq!(h.newest(), Some(now));
        }
    }
}
