//! Draining: the worker reports `draining`, the balancer moves every partition away, and the
//! worker waits until it holds none. Started by SIGTERM or by the kubelet's preStop hook
//! (`/drain`), whichever comes first; the second caller just waits for the same outcome.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::state::Shared;

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every partition was handed over.
    HandedOver,
    /// No live, non-draining peer could take them (the whole mesh is stopping).
    NoTakers,
    /// The drain timeout passed with partitions still held.
    TimedOut,
    /// Static ownership: nothing moves; the owner loop's own drain commits and snapshots.
    Static,
}

impl Drained {
    /// Lower-case name for logs and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HandedOver => "handedOver",
            Self::NoTakers => "noTakers",
            Self::TimedOut => "timedOut",
            Self::Static => "static",
        }
    }
}

/// Sets `draining` and waits until the partitions are handed over (bounded by the drain timeout).
pub async fn drain(s: &Shared) -> Drained {
    s.draining.store(true, Ordering::Relaxed);
    if !s.config.dynamic() {
        return Drained::Static;
    }
    let wait = Duration::from_secs_f64(s.config.drain_timeout_secs);
    let heartbeat = Duration::from_millis(s.config.heartbeat_ms * 2);
    let me = s.config.node_id.as_str();
    let outcome = tokio::time::timeout(wait, async {
        // give peers a heartbeat to report whether they are draining too
        tokio::time::sleep(heartbeat).await;
        while !s.held.snapshot().is_empty() {
            let takers = s
                .mesh
                .reports()
                .iter()
                .any(|(r, age)| r.worker_id != me && !r.draining && *age <= s.mesh.heartbeat_timeout);
            if !takers {
                return Drained::NoTakers;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Drained::HandedOver
    })
    .await
    .unwrap_or(Drained::TimedOut);
    match outcome {
        Drained::HandedOver => tracing::info!("all partitions handed over"),
        Drained::NoTakers => tracing::info!("no peer can take the partitions; stopping with them"),
        Drained::TimedOut => tracing::warn!("drain timeout: stopping with partitions still held"),
        Drained::Static => {}
    }
    outcome
}
