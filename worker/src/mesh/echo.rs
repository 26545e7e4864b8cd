//! Notices a mesh view that no longer reads what this worker itself wrote. librdkafka can leave
//! a consumer unable to fetch after the broker was fenced (see wire's `kafka/producer.rs`); the
//! mesh watch then fails and its supervisor follows the mesh again with a fresh client. Its own
//! heartbeats, acknowledged every few seconds, are what it must see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an acknowledged event of this worker may stay unread.
pub const ECHO_LIMIT: Duration = Duration::from_secs(30);

/// The oldest acknowledged own event (partition, offset) not read back yet, and since when.
#[derive(Debug)]
pub struct EchoWatch {
    limit: Duration,
    pending: Option<(i32, i64, Instant)>,
}

// === impl EchoWatch ===

impl EchoWatch {
    pub fn new(limit: Duration) -> Self {
        Self { limit, pending: None }
    }

    /// Stops waiting for own events in `partitions` (no longer read).
    pub fn forget(&mut self, partitions: &[i32]) {
        if self.pending.is_some_and(|(p, _, _)| partitions.contains(&p)) {
            self.pending = None;
        }
    }

    /// Looks at the last own event written and the offsets read per partition; true when an
    /// own event has stayed unread for the whole limit.
    pub fn observe(&mut self, now: Instant, written: Option<(i32, i64)>, read: &HashMap<i32, i64>) -> bool {
        let unread = |p: i32, o: i64| read.get(&p).is_none_or(|r| *r < o);
        if let Some((p, o, since)) = self.pending {
            if !unread(p, o) {
                self.pending = None;
            } else {
                return now.duration_since(since) >= self.limit;
            }
        }
        if let Some((p, o)) = written
            && unread(p, o)
        {
            self.pending = Some((p, o, now));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: Instant, secs: u64) -> Instant {
        t + Duration::from_secs(secs)
    }

    #[test]
    fn own_events_read_back_keep_it_quiet_and_one_left_unread_trips_it() {
        let t = Instant::now();
        let mut w = EchoWatch::new(ECHO_LIMIT);
        let mut read = HashMap::new();
        // each heartbeat is read back before the next look
        for s in 0..40 {
            let written = (s as i32 % 3, 100 + s as i64);
            read.insert(written.0, written.1 - 1);
            assert!(!w.observe(at(t, s * 2), Some(written), &read));
            read.insert(written.0, written.1);
        }
        // nothing written yet: nothing expected
        assert!(!EchoWatch::new(ECHO_LIMIT).observe(t, None, &HashMap::new()));
        // heartbeat at offset 500 on partition 1 is never read; later ones neither
        let mut w = EchoWatch::new(ECHO_LIMIT);
        let read = HashMap::from([(1, 499)]);
        assert!(!w.observe(at(t, 0), Some((1, 500)), &read));
        for s in 1..15 {
            assert!(!w.observe(at(t, s * 2), Some((1, 500 + s as i64)), &read));
        }
        assert!(w.observe(at(t, 30), Some((1, 515)), &read));
        // read late but within the limit: the clock starts again from the next unread one
        let mut w = EchoWatch::new(ECHO_LIMIT);
        assert!(!w.observe(at(t, 0), Some((1, 500)), &HashMap::from([(1, 499)])));
        assert!(!w.observe(at(t, 25), Some((1, 510)), &HashMap::from([(1, 505)])));
        assert!(!w.observe(at(t, 50), Some((1, 520)), &HashMap::from([(1, 509)])));
        assert!(w.observe(at(t, 55), Some((1, 520)), &HashMap::from([(1, 509)])));
    }
}
