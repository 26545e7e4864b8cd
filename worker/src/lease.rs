//! The heartbeat lease: a worker whose heartbeats stopped reaching Kafka for most of the
//! balancer's heartbeat timeout may already have been declared dead, and its partitions handed
//! to others. It then writes nothing for them (no answer, no snapshot, no offset commit) until
//! a heartbeat gets through again and it has taken its partitions over afresh.
//!
//! Why: epoch fences void a zombie's replies for every reader, but a zombie's snapshot or
//! commit written after the new owner's fence could still be read by a later take-over. A
//! process that was paused (SIGSTOP, a long GC-like stall, a VM freeze) finds on waking that its
//! lease ran out on the monotonic clock, before any of its timers get to write.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lease of one worker process.
#[derive(Debug)]
pub struct Lease {
    /// How long a heartbeat's delivery keeps the lease; `None`: never lapses (static ownership,
    /// where nobody declares a worker dead).
    ttl: Option<Duration>,
    /// Send time of the newest heartbeat the broker acknowledged (process start before any).
    renewed: Mutex<Instant>,
}

// === impl Lease ===

impl Lease {
    /// A lease lasting `ttl` past each acknowledged heartbeat's send time; held from `now`.
    pub fn new(ttl: Option<Duration>, now: Instant) -> Self {
        Self {
            ttl,
            renewed: Mutex::new(now),
        }
    }

    /// The lease for a balancer that declares workers dead after `timeout` without heartbeats
    /// sent every `interval`: it lapses one interval (at least a tenth of the timeout) earlier,
    /// so the worker stops writing before anyone can take its partitions.
    pub fn for_heartbeats(timeout: Duration, interval: Duration, now: Instant) -> Self {
        let margin = interval.max(timeout / 10).min(timeout / 2);
        Self::new(Some(timeout.saturating_sub(margin)), now)
    }

    /// A heartbeat sent at `sent` was acknowledged by the broker.
    pub fn renew(&self, sent: Instant) {
        let mut r = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        *r = (*r).max(sent);
    }

    /// Whether this worker may still write for its partitions at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        let Some(ttl) = self.ttl else { return true };
        let r = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        now.saturating_duration_since(r) < ttl
    }

    /// Whether it holds now.
    pub fn holds_now(&self) -> bool {
        self.holds(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapses_before_the_balancer_timeout_and_renews_on_delivery() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let lease = Lease::for_heartbeats(s(5), s(1), t0);
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
        let lease = Lease::new(None, t0);
        assert!(lease.holds(t0 + Duration::from_secs(3600)));
        // a heartbeat interval longer than the timeout still leaves half the timeout
        let lease = Lease::for_heartbeats(Duration::from_secs(2), Duration::from_secs(5), t0);
        assert!(lease.holds(t0 + Duration::from_millis(900)));
        assert!(!lease.holds(t0 + Duration::from_secs(1)));
    }
}
