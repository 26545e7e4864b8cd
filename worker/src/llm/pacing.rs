//! When streamed text leaves as a chunk record. Tokens that have already arrived always leave
//! together; with an interval, a piece leaves at most once per interval (the first at once), so a
//! model streaming 50 tokens/s writes 1/interval records per second, not 50, and no text waits
//! longer than the interval. Pure: the caller passes the clock.

use std::time::Duration;

use tokio::time::Instant;

/// Paces one attempt's pieces.
#[derive(Debug)]
pub(super) struct Pacer {
    interval: Duration,
    last: Option<Instant>,
}

impl Pacer {
    pub(super) fn new(interval: Duration) -> Self {
        Self { interval, last: None }
    }

    /// Until when text that arrived at `now` is held (`None`: it leaves now).
    pub(super) fn hold_until(&self, now: Instant) -> Option<Instant> {
        let due = self.last? + self.interval;
        (due > now).then_some(due)
    }

    /// A piece left at `now`.
    pub(super) fn sent(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives a pacer the way the LLM client does: text arriving at `arrivals` (ms from the
    /// start); returns when pieces left and how long each arrival waited.
    fn simulate(interval_ms: u64, arrivals: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut pacer = Pacer::new(Duration::from_millis(interval_ms));
        let (mut sent, mut waits) = (Vec::new(), Vec::new());
        let mut held: Vec<u64> = Vec::new();
        let mut hold: Option<u64> = None;
        for &a in arrivals {
            // a hold that expires before this arrival sends what it held
            if let Some(h) = hold.filter(|h| *h <= a) {
                pacer.sent(at(h));
                sent.push(h);
                waits.extend(held.drain(..).map(|x| h - x));
                hold = None;
            }
            held.push(a);
            if hold.is_none() {
                match pacer.hold_until(at(a)) {
                    Some(u) => hold = Some(u.duration_since(t0).as_millis() as u64),
                    None => {
                        pacer.sent(at(a));
                        sent.push(a);
                        waits.extend(held.drain(..).map(|x| a - x));
                    }
                }
            }
        }
        if let Some(h) = hold {
            sent.push(h);
            waits.extend(held.drain(..).map(|x| h - x));
        }
        (sent, waits)
    }

    #[test]
    fn without_an_interval_nothing_waits() {
        let (sent, waits) = simulate(0, &[0, 1, 1, 5, 20]);
        assert_eq!(sent, vec![0, 1, 1, 5, 20]);
        assert!(waits.iter().all(|w| *w == 0));
    }

    #[test]
    fn the_first_piece_leaves_at_once_and_later_ones_once_per_interval() {
        // a model at 20 ms per token with a 50 ms interval
        let arrivals: Vec<u64> = (0..10).map(|i| 200 + i * 20).collect();
        let (sent, _) = simulate(50, &arrivals);
        assert_eq!(sent, vec![200, 250, 300, 350, 400]);
    }

    proptest! {
        #[test]
        fn pieces_are_spaced_and_no_text_waits_longer_than_the_interval(
            interval in 0u64..100,
            gaps in proptest::collection::vec(0u64..80, 1..60),
        ) {
            let arrivals: Vec<u64> = gaps.iter().scan(0, |t, g| { *t += g; Some(*t) }).collect();
            let (sent, waits) = simulate(interval, &arrivals);
            prop_assert_eq!(waits.len(), arrivals.len());
            prop_assert!(waits.iter().all(|w| *w <= interval), "{:?}", waits);
            for pair in sent.windows(2) {
                prop_assert!(pair[1] >= pair[0] + interval, "{:?}", sent);
            }
            prop_assert_eq!(sent[0], arrivals[0]);
        }
    }
}
