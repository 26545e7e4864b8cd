//! What the owner loop actually holds right now (as opposed to what it should own): the
//! answerer produces for a partition only while it is held at the job's epoch, and reads are
//! served from memory only for partitions that are live.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// A held partition's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Fenced and restoring snapshots / replaying the log; nothing is answered yet.
    Replaying,
    /// Caught up: answering and serving.
    Live,
    /// Being handed away: no new answers; in-flight ones may still finish.
    Releasing,
}

/// Partitions held, with epoch and phase.
#[derive(Debug, Default)]
pub struct Held {
    inner: RwLock<BTreeMap<i32, (u64, Phase)>>,
}

// === impl Held ===

impl Held {
    /// Sets a partition's epoch and phase.
    pub fn set(&self, partition: i32, epoch: u64, phase: Phase) {
        self.write().insert(partition, (epoch, phase));
    }

    /// Forgets a partition.
    pub fn remove(&self, partition: i32) {
        self.write().remove(&partition);
    }

    /// Epoch and phase of a held partition.
    pub fn get(&self, partition: i32) -> Option<(u64, Phase)> {
        self.read().get(&partition).copied()
    }

    /// Whether `partition` is held at `epoch` (any phase): replies may be produced.
    pub fn holds_at(&self, partition: i32, epoch: u64) -> bool {
        self.get(partition).is_some_and(|(e, _)| e == epoch)
    }

    /// Whether `partition` is live here.
    pub fn is_live(&self, partition: i32) -> bool {
        self.get(partition).is_some_and(|(_, p)| p == Phase::Live)
    }

    /// Everything held.
    pub fn snapshot(&self) -> BTreeMap<i32, (u64, Phase)> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i32, (u64, Phase)>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i32, (u64, Phase)>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}
