//! Draining: the worker reports `draining`, the balancer moves every partition away, and the
//! worker waits until it holds none. Started by SIGTERM or by the kubelet's preStop hook
//! (`/drain`), whichever comes first; the second caller just waits for the same outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::mesh::Mesh;
use crate::ownership::Held;

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

/// What a drain looks at.
pub struct Drain {
    /// This worker.
    pub node_id: String,
    /// Set when draining starts (readiness turns false, sends get 503, heartbeats say so).
    pub draining: Arc<AtomicBool>,
    /// With static ownership nothing moves.
    pub dynamic: bool,
    /// Longest wait for the partitions to move away.
    pub timeout: Duration,
    /// Heartbeat period (peers report whether they drain too within one).
    pub heartbeat: Duration,
    /// What this worker holds.
    pub held: Held,
    /// Who could take the partitions.
    pub mesh: Arc<Mesh>,
}

// === impl Drain ===

impl Drain {
    /// Sets `draining` and waits until the partitions are handed over (bounded by the drain
    /// timeout).
    pub async fn drain(&self) -> Drained {
        self.draining.store(true, Ordering::Relaxed);
        if !self.dynamic {
            return Drained::Static;
        }
        let me = self.node_id.as_str();
        let outcome = tokio::time::timeout(self.timeout, async {
            // give peers two heartbeats to report whether they are draining too
            tokio::time::sleep(self.heartbeat * 2).await;
            while !self.held.partitions().is_empty() {
                let timeout = self.mesh.heartbeat_timeout();
                let takers = self
                    .mesh
                    .reports()
                    .iter()
                    .any(|(r, age)| r.worker_id != me && !r.draining && *age <= timeout);
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
}
