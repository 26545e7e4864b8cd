//! Local live subscribers per conversation (WebSocket and SSE clients of this worker), and
//! what a resume needs from the fan-out: how far it has read each partition, and the fences it
//! has seen there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::cursor::{Cursor, Positioned, Topic};
use crate::ownership::{Epoch, Partition};

const CAPACITY: usize = 1024;

/// Fan-out of live events to this worker's clients.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Positioned>>>>,
    /// The fan-out's next offset in each log, per partition.
    read: Mutex<HashMap<Partition, Cursor>>,
    fences: Mutex<HashMap<Partition, FenceHistory>>,
}

/// The fences of one `chat.messages` partition from where the fan-out started reading.
#[derive(Debug, Default)]
struct FenceHistory {
    /// Offsets from here on are covered.
    from: i64,
    /// The highest fence before `from`.
    base: Epoch,
    /// Fences read since, by offset.
    seen: Vec<(i64, Epoch)>,
}

// === impl Hub ===

impl Hub {
    /// Subscribes to a conversation's live events; with where the fan-out stands in the
    /// conversation's `partition` (a new client's position: what comes later is its).
    pub fn subscribe(
        &self,
        conversation: &str,
        partition: Partition,
    ) -> (broadcast::Receiver<Arc<Positioned>>, Cursor) {
        let mut map = lock(&self.channels);
        let rx = map
            .entry(conversation.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        let at = lock(&self.read).get(&partition).copied().unwrap_or_default();
        (rx, at)
    }

    /// Whether anyone here watches `conversation` (the fan-out skips the rest cheaply).
    pub fn watched(&self, conversation: &str) -> bool {
        let map = lock(&self.channels);
        map.get(conversation).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Sends an event to the conversation's subscribers.
    pub fn publish(&self, conversation: &str, event: Positioned) {
        let map = lock(&self.channels);
        if let Some(tx) = map.get(conversation) {
            let _ = tx.send(Arc::new(event));
        }
    }

    /// Ends every live stream (their channels close).
    pub fn close_all(&self) {
        lock(&self.channels).clear();
    }

    /// Forgets conversations nobody watches any more; returns those still watched.
    pub fn prune(&self) -> usize {
        let mut map = lock(&self.channels);
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.len()
    }

    /// The fan-out read `partition` of `topic` up to (not including) `next`.
    pub fn read_to(&self, partition: Partition, topic: Topic, next: i64) {
        let mut read = lock(&self.read);
        let at = read.entry(partition).or_default();
        match topic {
            Topic::Messages => at.messages = next,
            Topic::Stream => at.stream = next,
            Topic::Users => at.users = next,
        }
    }

    /// The fan-out reads `chat.messages` `partition` from `from`, the highest fence before it
    /// being `base`.
    pub fn fences_from(&self, partition: Partition, from: i64, base: Epoch) {
        lock(&self.fences).insert(
            partition,
            FenceHistory {
                from,
                base,
                seen: Vec::new(),
            },
        );
    }

    /// A fence of `epoch` at `offset` of `partition`.
    pub fn fence_at(&self, partition: Partition, offset: i64, epoch: Epoch) {
        if let Some(h) = lock(&self.fences).get_mut(&partition)
            && offset >= h.from
        {
            h.seen.push((offset, epoch));
        }
    }

    /// The highest fence before `offset` of `partition`, if the fan-out has read from there.
    pub fn fence_before(&self, partition: Partition, offset: i64) -> Option<Epoch> {
        let fences = lock(&self.fences);
        let h = fences.get(&partition)?;
        (offset >= h.from).then(|| {
            h.seen
                .iter()
                .filter(|(at, _)| *at < offset)
                .map(|(_, e)| *e)
                .fold(h.base, Epoch::max)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
