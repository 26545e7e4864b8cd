//! Notices reading that stopped while records wait. librdkafka can leave a client unable to
//! fetch a partition after the broker was fenced (see wire's `kafka/producer.rs`); the owner
//! loop then fails and its supervisor starts it again with fresh clients, taking every
//! partition over as after any failed run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::ownership::Partition;

/// How long a held partition's position may stay put while records wait after it.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The limit once the wedge is likely: Kafka came back after being unreachable, or a client
/// of this worker said a partition has no leader it knows. Long enough for a client's own
/// reconnect backoff (librdkafka's `reconnect.backoff.max.ms`, 10 s by default, is not
/// changed).
pub(super) const SUSPECT_LIMIT: Duration = Duration::from_secs(10);

/// How long after either sign the shorter limit applies: a snapshot round may first wait a
/// whole produce timeout (30 s) before the loop reads again.
pub(super) const SUSPECT_WINDOW: Duration = Duration::from_secs(120);

/// A gap between two looks longer than this means the loop itself was busy (a snapshot round
/// waiting on the broker): it was not reading, so that time does not count.
const LOOK_GAP: Duration = Duration::from_secs(6);

/// Per held partition: the position last seen and since when it has been behind there.
#[derive(Debug)]
pub(super) struct StallWatch {
    limit: Duration,
    suspect_limit: Duration,
    behind_since: BTreeMap<Partition, (i64, Instant)>,
    last_look: Option<Instant>,
}

// === impl StallWatch ===

impl StallWatch {
    pub(super) fn new(limit: Duration, suspect_limit: Duration) -> Self {
        Self {
            limit,
            suspect_limit,
            behind_since: BTreeMap::new(),
            last_look: None,
        }
    }

    /// Looks at the positions and lags now; returns a partition (and its position) that has
    /// not moved for the whole limit while behind. `reading` is false while the loop holds
    /// back on purpose (answers queued up to their bound): that time does not count, nor time
    /// between looks more than [`LOOK_GAP`] apart. `suspect`: the wedge is likely (see
    /// [`SUSPECT_LIMIT`]); the shorter limit applies.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        positions: &BTreeMap<Partition, i64>,
        lag: impl Fn(Partition) -> Option<i64>,
        reading: bool,
        suspect: bool,
    ) -> Option<(Partition, i64)> {
        let limit = if suspect { self.suspect_limit } else { self.limit };
        let busy = self
            .last_look
            .replace(now)
            .is_some_and(|last| now.duration_since(last) > LOOK_GAP);
        if !reading || busy {
            self.behind_since.clear();
        }
        if !reading {
            return None;
        }
        self.behind_since.retain(|p, _| positions.contains_key(p));
        for (&p, &position) in positions {
            if lag(p).is_none_or(|l| l <= 0) {
                self.behind_since.remove(&p);
                continue;
            }
            match self.behind_since.get(&p) {
                Some(&(at, since)) if at == position => {
                    if now.duration_since(since) >= limit {
                        return Some((p, position));
                    }
                }
                _ => {
                    self.behind_since.insert(p, (position, now));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);
    const SHORT: Duration = Duration::from_secs(10);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_position_stuck_behind_for_the_limit_is_a_stall() {
        let t = Instant::now();
        let mut w = StallWatch::new(LIMIT, SHORT);
        let pos = BTreeMap::from([(0, 10), (1, 5)]);
        let lag = |p| Some(if p == 0 { 3 } else { 0 });
        for s in (0..30).step_by(2) {
            assert_eq!(w.observe(at(t, s), &pos, lag, true, false), None);
        }
        assert_eq!(w.observe(at(t, 30), &pos, lag, true, false), Some((0, 10)));
    }

    #[test]
    fn time_the_loop_spent_elsewhere_does_not_count() {
        let t = Instant::now();
        let mut w = StallWatch::new(LIMIT, SHORT);
        let pos = BTreeMap::from([(0, 10)]);
        assert_eq!(w.observe(at(t, 0), &pos, |_| Some(3), true, false), None);
        // the loop waited 30 s on a snapshot round: not reading meanwhile
        assert_eq!(w.observe(at(t, 30), &pos, |_| Some(3), true, false), None);
        for s in (32..60).step_by(2) {
            assert_eq!(w.observe(at(t, s), &pos, |_| Some(3), true, false), None);
        }
        assert_eq!(
            w.observe(at(t, 60), &pos, |_| Some(3), true, false),
            Some((0, 10))
        );
    }

    #[test]
    fn moving_caught_up_unknown_or_holding_back_is_not_a_stall() {
        let t = Instant::now();
        let mut w = StallWatch::new(LIMIT, SHORT);
        // moving: the clock starts again at each new position
        for s in 0..50 {
            let pos = BTreeMap::from([(0, 10 + s as i64 / 5)]);
            assert_eq!(w.observe(at(t, s * 2), &pos, |_| Some(50), true, false), None);
        }
        // caught up, or the lag not known: never behind
        let pos = BTreeMap::from([(0, 100)]);
        for s in 0..50 {
            assert_eq!(
                w.observe(at(t, 100 + s * 2), &pos, |_| Some(0), true, false),
                None
            );
            assert_eq!(w.observe(at(t, 100 + s * 2), &pos, |_| None, true, false), None);
        }
        // holding back on purpose (answers queued) resets the clock
        let mut w = StallWatch::new(LIMIT, SHORT);
        let looks = |w: &mut StallWatch, from: u64, to: u64, reading: bool| {
            (from..to)
                .step_by(2)
                .find_map(|s| w.observe(at(t, s), &pos, |_| Some(9), reading, false))
        };
        assert_eq!(looks(&mut w, 0, 20, true), None);
        assert_eq!(looks(&mut w, 20, 40, false), None);
        assert_eq!(looks(&mut w, 40, 70, true), None);
        assert_eq!(
            w.observe(at(t, 70), &pos, |_| Some(9), true, false),
            Some((0, 100))
        );
        // a partition released meanwhile is forgotten
        let mut w = StallWatch::new(LIMIT, SHORT);
        assert_eq!(looks(&mut w, 0, 20, true), None);
        assert_eq!(
            w.observe(at(t, 20), &BTreeMap::new(), |_| Some(9), true, false),
            None
        );
        assert_eq!(looks(&mut w, 22, 52, true), None);
    }

    #[test]
    fn once_the_wedge_is_likely_the_short_limit_applies() {
        let t = Instant::now();
        let mut w = StallWatch::new(LIMIT, SHORT);
        let pos = BTreeMap::from([(0, 10)]);
        for s in (0..10).step_by(2) {
            assert_eq!(w.observe(at(t, s), &pos, |_| Some(3), true, true), None);
        }
        assert_eq!(w.observe(at(t, 10), &pos, |_| Some(3), true, true), Some((0, 10)));
        // the loop busy meanwhile still does not count
        let mut w = StallWatch::new(LIMIT, SHORT);
        assert_eq!(w.observe(at(t, 0), &pos, |_| Some(3), true, true), None);
        for s in (30..40).step_by(2) {
            assert_eq!(w.observe(at(t, s), &pos, |_| Some(3), true, true), None);
        }
        assert_eq!(w.observe(at(t, 40), &pos, |_| Some(3), true, true), Some((0, 10)));
    }
}
