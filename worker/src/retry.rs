//! Waits between retries of what must eventually succeed (a reply's write, a loop's restart):
//! exponential from `first` up to `cap`, with jitter so that workers hit by the same outage do
//! not retry in lockstep.

use std::time::Duration;

/// Endless waits, doubling from `first` to at most `cap` (jitter adds up to as much again).
pub fn forever(first: Duration, cap: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_never_end() {
        let first = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let waits: Vec<Duration> = forever(first, cap).take(50).collect();
        assert_eq!(waits.len(), 50);
        assert!(waits[0] >= first && waits[0] <= first * 2, "{waits:?}");
        // jitter adds at most the wait itself
        assert!(waits.iter().all(|w| *w <= cap * 2), "{waits:?}");
        assert!(waits[40..].iter().all(|w| *w >= cap), "{waits:?}");
    }
}
