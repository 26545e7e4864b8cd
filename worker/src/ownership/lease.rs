//! The heartbeat lease: a worker whose heartbeats stopped reaching Kafka for most of the
//! balancer's heartbeat timeout may already have been declared dead, and its partitions handed
//! to others. It then writes nothing for them (no answer, no snapshot, no offset commit) until
//! a heartbeat gets through again and it has taken its partitions over afresh.
//!
//! Why: epoch fences void a zombie's replies for every reader, but a zombie's snapshot or
//! commit written after the new owner's fence could still be read by a later take-over. A
//! process that was paused (SIGSTOP, a long GC-like stall, a VM freeze) finds on waking that its
//! lease ran out on the monotonic clock, before any of its timers get to write.

//!
//! The timeout is the balancer's, read from its assignment table ([`HeartbeatLease::follow`]),
//! so the lease and the balancer's death verdict come from one setting.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The heartbeat lease of one worker process.
#[derive(Debug)]
pub struct HeartbeatLease {
    /// Time between this worker's heartbeats (the margin the lease keeps).
    interval: Duration,
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    /// How long a heartbeat's delivery keeps the lease; `None`: never lapses (static
    /// ownership, where nobody declares a worker dead, or before the first table).
    ttl: Option<Duration>,
    /// Send time of the newest heartbeat the broker acknowledged (process start before any).
    renewed: Instant,
}

// === impl HeartbeatLease ===

impl HeartbeatLease {
    /// A lease for heartbeats sent every `interval`, held from `now`, that never lapses until
    /// it [follows](Self::follow) a balancer.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            state: Mutex::new(LeaseState {
                ttl: None,
                renewed: now,
            }),
        }
    }

    /// Follows a balancer that declares workers dead after `timeout` without heartbeats
    /// (`None`: nobody does). The lease lapses one heartbeat interval (at least a tenth of the
    /// timeout) earlier, so the worker stops writing before anyone can take its partitions.
    pub fn follow(&self, timeout: Option<Duration>) {
        let ttl = timeout.map(|t| t.saturating_sub(self.interval.max(t / 10).min(t / 2)));
        self.lock().ttl = ttl;
    }

    /// A heartbeat sent at `sent` was acknowledged by the broker.
    pub fn renew(&self, sent: Instant) {
        let mut s = self.lock();
        s.renewed = s.renewed.max(sent);
    }

    /// Whether this worker may still write for its partitions at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        let s = self.lock();
        s.ttl
            .is_none_or(|ttl| now.saturating_duration_since(s.renewed) < ttl)
    }

    /// Whether it holds now.
    pub fn holds_now(&self) -> bool {
        self.holds(Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn following(timeout: Duration, interval: Duration, t0: Instant) -> HeartbeatLease {
        let lease = HeartbeatLease::new(interval, t0);
        lease.follow(Some(timeout));
        lease
    }

    #[test]
    fn lapses_before_the_balancer_timeout_and_renews_on_delivery() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let lease = following(s(5), s(1), t0);
        assert!(lease.holds(t0 + Duration::from_millis(3900)));
        assert!(!lease.holds(t0 + s(4)), "one interval before the balancer's 5 s");
        // a heartbeat sent at 3 s and acknowledged later counts from its send time
        lease.renew(t0 + s(3));
        assert!(lease.holds(t0 + Duration::from_millis(6900)));
        assert!(!lease.holds(t0 + s(7)));
        // an older acknowledgement arriving late does not move the lease back
        lease.renew(t0 + s(1));
        assert!(lease.holds(t0 + Duration::from_millis(6900)));
    }

    #[test]
    fn a_static_mesh_never_lapses_and_margins_stay_sane() {
        let t0 = Instant::now();
        let lease = HeartbeatLease::new(Duration::from_secs(1), t0);
        assert!(lease.holds(t0 + Duration::from_secs(3600)));
        // a heartbeat interval longer than the timeout still leaves half the timeout
        let lease = following(Duration::from_secs(2), Duration::from_secs(5), t0);
        assert!(lease.holds(t0 + Duration::from_millis(900)));
        assert!(!lease.holds(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_new_table_timeout_applies_at_once() {
        let t0 = Instant::now();
        let lease = following(Duration::from_secs(5), Duration::from_secs(1), t0);
        assert!(lease.holds(t0 + Duration::from_millis(3500)));
        // the balancer now declares death after 3 s: the lease must lapse before that
        lease.follow(Some(Duration::from_secs(3)));
        assert!(!lease.holds(t0 + Duration::from_millis(2500)));
        lease.follow(None);
        assert!(lease.holds(t0 + Duration::from_secs(60)));
    }
}
