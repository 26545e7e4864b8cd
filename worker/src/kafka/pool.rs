//! Connected blocking consumers for take-overs. A new client costs a connection, a metadata
//! round trip and a group-coordinator lookup — tens of milliseconds inside a handoff's pause —
//! so take-overs borrow one from here and give it back. The pool grows to the number of
//! take-overs that ran at once (bounded by the partitions a worker can receive together).

use std::sync::Mutex;

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{KafkaError, META_TIMEOUT};

/// Reusable readers in the worker's consumer group (for committed offsets).
pub struct ReaderPool {
    cfg: ClientConfig,
    free: Mutex<Vec<BaseConsumer>>,
}

impl ReaderPool {
    /// A pool of readers made from `cfg` (which carries the worker's `group.id`).
    pub fn new(cfg: &ClientConfig) -> Self {
        let mut cfg = cfg.clone();
        cfg.set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10");
        Self {
            cfg,
            free: Mutex::new(Vec::new()),
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

    /// Returns a reader for the next take-over.
    pub fn give(&self, c: BaseConsumer) {
        if let Ok(mut f) = self.free.lock() {
            f.push(c);
        }
    }
}
