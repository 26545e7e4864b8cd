//! Local live subscribers per conversation (this worker's WebSocket and SSE clients, and the
//! relayed streams it serves peers), which partitions the fan-out must read for them, and what
//! a resume needs from the fan-out: how far it has read each partition, and the fences it has
//! seen there.
//!
//! The fan-out reads only partitions someone here watches: the first subscriber of a partition
//! asks for it and waits until the fan-out knows the partition's fences and where it starts
//! serving; a partition nobody watched for [`LINGER`] is let go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::cursor::{Cursor, Positioned, Topic};
use crate::ownership::{Epoch, Partition};

const CAPACITY: usize = 1024;

/// How long the fan-out keeps reading a partition nobody watches any more (a client that
/// reconnects, or the next conversation watched there, finds it served).
pub const LINGER: Duration = Duration::from_secs(30);

/// How long a first subscriber waits for the fan-out to start reading its partition.
const SERVE_WAIT: Duration = Duration::from_secs(15);

/// Fan-out of live events to this worker's subscribers.
#[derive(Debug)]
pub struct Hub {
    channels: Mutex<HashMap<String, Channel>>,
    /// Partitions asked for or read, by the fan-out.
    serving: Mutex<HashMap<Partition, Serving>>,
    /// Partitions a subscriber asked for, to the fan-out.
    asks: mpsc::UnboundedSender<Partition>,
    asked: tokio::sync::Mutex<mpsc::UnboundedReceiver<Partition>>,
    /// The fan-out's next offset in each log, per partition.
    read: Mutex<HashMap<Partition, Cursor>>,
    fences: Mutex<HashMap<Partition, FenceHistory>>,
}

#[derive(Debug)]
struct Channel {
    partition: Partition,
    tx: broadcast::Sender<Arc<Positioned>>,
}

/// A partition the fan-out was asked for.
#[derive(Debug, Default)]
struct Serving {
    /// It reads the partition: what it has read is published.
    ready: bool,
    /// Subscribers waiting for it to be ready.
    waiters: Vec<oneshot::Sender<()>>,
    /// Since when nobody watches it.
    idle_since: Option<Instant>,
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

/// The fan-out did not start reading a partition in time (Kafka away, or live delivery
/// restarting).
#[derive(Debug, thiserror::Error)]
#[error("live delivery is not reading partition {0} yet; try again shortly")]
pub struct NotServing(pub Partition);

impl Default for Hub {
    fn default() -> Self {
        let (asks, asked) = mpsc::unbounded_channel();
        Self {
            channels: Mutex::default(),
            serving: Mutex::default(),
            asks,
            asked: tokio::sync::Mutex::new(asked),
            read: Mutex::default(),
            fences: Mutex::default(),
        }
    }
}

// === impl Hub ===

impl Hub {
    /// Subscribes to a conversation's live events; with where the fan-out stands in the
    /// conversation's `partition` (a new client's position: what comes later is its). The
    /// first subscriber of a partition waits until the fan-out reads it.
    pub async fn subscribe(
        &self,
        conversation: &str,
        partition: Partition,
    ) -> Result<(broadcast::Receiver<Arc<Positioned>>, Cursor), NotServing> {
        let rx = lock(&self.channels)
            .entry(conversation.to_string())
            .or_insert_with(|| Channel {
                partition,
                tx: broadcast::channel(CAPACITY).0,
            })
            .tx
            .subscribe();
        let wait = {
            let mut serving = lock(&self.serving);
            let s = serving.entry(partition).or_default();
            s.idle_since = None;
            if s.ready {
                None
            } else {
                if s.waiters.is_empty() {
                    let _ = self.asks.send(partition);
                }
                let (tx, rx) = oneshot::channel();
                s.waiters.push(tx);
                Some(rx)
            }
        };
        if let Some(ready) = wait {
            match tokio::time::timeout(SERVE_WAIT, ready).await {
                Ok(Ok(())) => {}
                _ => return Err(NotServing(partition)),
            }
        }
        let at = lock(&self.read).get(&partition).copied().unwrap_or_default();
        Ok((rx, at))
    }

    /// Whether anyone here watches `conversation` (the fan-out skips the rest cheaply).
    pub fn watched(&self, conversation: &str) -> bool {
        let map = lock(&self.channels);
        map.get(conversation).is_some_and(|ch| ch.tx.receiver_count() > 0)
    }

    /// Sends an event to the conversation's subscribers.
    pub fn publish(&self, conversation: &str, event: Positioned) {
        let map = lock(&self.channels);
        if let Some(ch) = map.get(conversation) {
            let _ = ch.tx.send(Arc::new(event));
        }
    }

    /// The next partition a subscriber asked for (the fan-out's queue; one fan-out at a time).
    pub async fn asked(&self) -> Option<Partition> {
        self.asked.lock().await.recv().await
    }

    /// Partitions asked for but not read yet (a fan-out starting again reads them first).
    pub fn waiting(&self) -> Vec<Partition> {
        let serving = lock(&self.serving);
        serving
            .iter()
            .filter(|(_, s)| !s.ready && !s.waiters.is_empty())
            .map(|(p, _)| *p)
            .collect()
    }

    /// The fan-out reads `partition` from the positions it gave `read_to` and the fences it gave
    /// `fences_from`: its waiting subscribers go on.
    pub fn ready(&self, partition: Partition) {
        let mut serving = lock(&self.serving);
        let s = serving.entry(partition).or_default();
        s.ready = true;
        for w in s.waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// The fan-out starts again after a failure: events may have been missed, so every
    /// subscription of a partition it read ends (its feed goes on from its client's last event
    /// id, read back from the log); partitions still asked for stay asked for.
    pub fn restart(&self) {
        let mut channels = lock(&self.channels);
        let mut serving = lock(&self.serving);
        channels.retain(|_, ch| serving.get(&ch.partition).is_some_and(|s| !s.ready));
        serving.retain(|_, s| !s.ready && !s.waiters.is_empty());
        lock(&self.read).clear();
        lock(&self.fences).clear();
    }

    /// The fan-out stopped for good (the worker is closing): every stream ends, and subscribers
    /// still waiting for a partition are told at once.
    pub fn close(&self) {
        let (mut channels, mut serving) = (lock(&self.channels), lock(&self.serving));
        channels.clear();
        serving.clear();
    }

    /// Forgets conversations nobody watches any more, and lets go of partitions nobody has
    /// watched for `linger`: returns those, which the fan-out stops reading.
    pub fn prune(&self, now: Instant, linger: Duration) -> Vec<Partition> {
        let mut channels = lock(&self.channels);
        channels.retain(|_, ch| ch.tx.receiver_count() > 0);
        let watched: std::collections::HashSet<Partition> =
            channels.values().map(|ch| ch.partition).collect();
        let mut serving = lock(&self.serving);
        let mut gone = Vec::new();
        serving.retain(|p, s| {
            if !s.ready || watched.contains(p) {
                s.idle_since = None;
                return true;
            }
            let since = *s.idle_since.get_or_insert(now);
            if now.duration_since(since) < linger {
                return true;
            }
            gone.push(*p);
            false
        });
        drop(serving);
        drop(channels);
        let (mut read, mut fences) = (lock(&self.read), lock(&self.fences));
        for p in &gone {
            read.remove(p);
            fences.remove(p);
        }
        gone
    }

    /// The partitions the fan-out reads now.
    pub fn read_partitions(&self) -> usize {
        lock(&self.serving).values().filter(|s| s.ready).count()
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
            && !h.seen.contains(&(offset, epoch))
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

#[cfg(test)]
mod tests;
