//! Connected blocking consumers for take-overs. A new client costs a connection, a metadata
//! round trip and a group-coordinator lookup — tens of milliseconds inside a handoff's pause —
//! so take-overs borrow one from here and give it back. The pool grows to the number of
//! take-overs that ran at once (bounded by the partitions a worker can receive together) and
//! keeps `keep` of them afterwards: an idle client still costs three threads, two broker
//! connections and ~0.5 MiB.

use std::sync::Mutex;

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{KafkaError, META_TIMEOUT, range_reader};

/// Reusable readers in the worker's consumer group (for committed offsets).
pub struct ReaderPool {
    cfg: ClientConfig,
    free: Mutex<Vec<BaseConsumer>>,
    keep: usize,
}

impl ReaderPool {
    /// A pool of readers in consumer group `group` (whose commits they read) that keeps at
    /// most `keep` idle readers.
    pub fn new(base: &ClientConfig, group: &str, keep: usize) -> Self {
        Self {
            cfg: range_reader(base, group),
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// Creates `n` readers and connects them to the group coordinator by asking for the
    /// committed offset of `topic` partition 0 (blocking; call from a blocking thread).
    pub fn warm(&self, n: usize, topic: &str) -> Result<(), KafkaError> {
        for _ in 0..n {
            let c: BaseConsumer = self.cfg.create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, 0);
            let _ = c.committed_offsets(tpl, META_TIMEOUT);
            self.give(c);
        }
        Ok(())
    }

    /// A free reader, or a new one when all are busy.
    pub fn take(&self) -> Result<BaseConsumer, KafkaError> {
        let free = self.free.lock().ok().and_then(|mut f| f.pop());
        match free {
            Some(c) => Ok(c),
            None => Ok(self.cfg.create()?),
        }
    }

    /// Returns a reader for the next take-over, or closes it when `keep` are idle already.
    pub fn give(&self, c: BaseConsumer) {
        let surplus = match self.free.lock() {
            Ok(mut f) if f.len() < self.keep => {
                f.push(c);
                None
            }
            _ => Some(c),
        };
        if let Some(c) = surplus {
            Self::close(c);
        }
    }

    /// Returns a reader after its read: kept when it worked, closed when it failed (a client
    /// can come out of a broker's fencing unable to fetch metadata for good; the next take-over
    /// must not inherit it).
    pub fn give_after<T, E>(&self, c: BaseConsumer, read: &Result<T, E>) {
        if read.is_ok() {
            self.give(c);
        } else {
            Self::close(c);
        }
    }

    fn close(c: BaseConsumer) {
        // closing a client joins its threads: not on the take-over's path
        let spawned = std::thread::Builder::new()
            .name("reader-close".into())
            .spawn(move || drop(c));
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "closing a reader inline");
        }
    }

    /// Idle readers kept for the next take-overs.
    pub fn idle(&self) -> usize {
        self.free.lock().map_or(0, |f| f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_keep_idle_readers() {
        let mut cfg = ClientConfig::new();
        // creating a client does not need its broker
        cfg.set("bootstrap.servers", "127.0.0.1:9");
        let pool = ReaderPool::new(&cfg, "pool-test", 2);
        let taken: Vec<BaseConsumer> = (0..4).map(|_| pool.take().expect("client")).collect();
        assert_eq!(pool.idle(), 0);
        for c in taken {
            pool.give(c);
        }
        assert_eq!(pool.idle(), 2);
        // a kept reader is reused, not re-created
        let again = pool.take().expect("client");
        assert_eq!(pool.idle(), 1);
        pool.give(again);
        assert_eq!(pool.idle(), 2);
    }
}
