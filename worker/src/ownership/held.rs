//! The read-only face of this worker's [`PartitionMachine`]: what answers, reads, heartbeats,
//! readiness and the drain see. Only the owner loop feeds the machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{Effect, Epoch, Event, HeldPartition, Partition, PartitionMachine};

/// A shared handle on the machine.
#[derive(Clone, Debug)]
pub struct Held(Arc<Mutex<PartitionMachine>>);

// === impl Held ===

impl Held {
    /// A handle on `machine`.
    pub fn new(machine: PartitionMachine) -> Self {
        Self(Arc::new(Mutex::new(machine)))
    }

    /// Starts over holding nothing (the owner loop restarted after a failure: its consumer and
    /// answers are gone, so every partition is taken over again).
    pub(crate) fn reset(&self) {
        let mut m = self.lock();
        *m = m.fresh();
    }

    /// Feeds an event (the owner loop only).
    pub(crate) fn on(&self, event: Event, now: Instant) -> Vec<Effect> {
        self.lock().on(event, now)
    }

    /// A held partition.
    pub fn get(&self, partition: Partition) -> Option<HeldPartition> {
        self.lock().get(partition)
    }

    /// Every held partition.
    pub fn partitions(&self) -> BTreeMap<Partition, HeldPartition> {
        self.lock().held_partitions()
    }

    /// Whether replies, snapshots and commits of `partition` may be written under `epoch`.
    pub fn may_write(&self, partition: Partition, epoch: Epoch) -> bool {
        self.lock().may_write(partition, epoch)
    }

    /// Whether `partition` is answered and served here.
    pub fn is_live(&self, partition: Partition) -> bool {
        self.lock().is_live(partition)
    }

    /// Every partition this worker should own is live here.
    pub fn caught_up(&self) -> bool {
        self.lock().caught_up()
    }

    /// Partitions waiting for their old owner's release.
    pub fn awaiting_release(&self) -> Vec<(Partition, Epoch)> {
        self.lock().awaiting_release()
    }

    /// Consumer positions of the partitions being consumed.
    pub fn positions(&self) -> BTreeMap<Partition, i64> {
        self.lock().positions()
    }

    fn lock(&self) -> MutexGuard<'_, PartitionMachine> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
