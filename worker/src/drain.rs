//! Draining: the worker reports `draining`, the balancer moves every partition away, and the
//! worker waits until it holds none. Started by SIGTERM or by the kubelet's preStop hook
//! (`meshchat-worker drain`, which calls the internal listener's `/drain` from inside the pod),
//! whichever comes first; the second caller just waits for the same outcome. A drain that SIGTERM
//! did not follow can be undone.

pub mod client;

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
    /// The drain was undone before it ended.
    Undone,
}

/// Why a drain cannot be undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UndoRefused {
    /// SIGTERM came: the worker is stopping.
    #[error("the worker is stopping (SIGTERM); its drain cannot be undone")]
    Stopping,
}

impl Drained {
    /// Lower-case name for logs and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HandedOver => "handedOver",
            Self::NoTakers => "noTakers",
            Self::TimedOut => "timedOut",
            Self::Static => "static",
            Self::Undone => "undone",
        }
    }
}

/// What a drain looks at.
pub struct Drain {
    /// This worker.
    pub node_id: String,
    /// Set when draining starts (readiness turns false, sends get 503, heartbeats say so).
    pub draining: Arc<AtomicBool>,
    /// Set by SIGTERM: from then on the drain cannot be undone.
    pub stopping: AtomicBool,
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
                if !self.draining.load(Ordering::Relaxed) {
                    if !self.stopping.load(Ordering::Relaxed) {
                        return Drained::Undone;
                    }
                    // an undo raced SIGTERM: SIGTERM wins
                    self.draining.store(true, Ordering::Relaxed);
                }
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
            Drained::Undone => tracing::info!("drain undone: serving again"),
            Drained::Static => {}
        }
        outcome
    }

    /// SIGTERM: drains, and nothing can undo it any more.
    pub async fn stop(&self) -> Drained {
        self.stopping.store(true, Ordering::Relaxed);
        self.drain().await
    }

    /// Undoes a drain that SIGTERM did not follow: the worker is ready again and its heartbeats
    /// say it takes partitions (the balancer's next rounds give it some back).
    pub fn undo(&self) -> Result<bool, UndoRefused> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(UndoRefused::Stopping);
        }
        let was = self.draining.swap(false, Ordering::Relaxed);
        if was {
            tracing::info!("drain undone");
        }
        Ok(was)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::{PartitionMachine, Timeouts};

    fn drain(dynamic: bool) -> Drain {
        Drain {
            node_id: "node-0".into(),
            draining: Arc::default(),
            stopping: AtomicBool::new(false),
            dynamic,
            timeout: Duration::from_secs(1),
            heartbeat: Duration::from_millis(10),
            held: Held::new(PartitionMachine::new(
                "node-0",
                Timeouts {
                    handoff_grace: Duration::from_secs(1),
                    release_timeout: Duration::from_secs(1),
                    retry: Duration::from_secs(1),
                },
            )),
            mesh: Arc::new(Mesh::new("mesh")),
        }
    }

    #[tokio::test]
    async fn a_drain_is_undone_unless_sigterm_came() {
        let d = drain(false);
        assert_eq!(d.undo(), Ok(false), "nothing to undo");
        assert_eq!(d.drain().await, Drained::Static);
        assert!(d.draining.load(Ordering::Relaxed));
        assert_eq!(d.undo(), Ok(true));
        assert!(!d.draining.load(Ordering::Relaxed), "ready again");
        assert_eq!(d.stop().await, Drained::Static);
        assert_eq!(d.undo(), Err(UndoRefused::Stopping));
        assert!(d.draining.load(Ordering::Relaxed), "SIGTERM's drain stays");
    }
}
