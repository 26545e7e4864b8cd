//! Reads compacted `chat.index` whole, then follows it: a thin shell around the table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use meshchat_wire::kafka::{self, KafkaError, META_TIMEOUT, TailFetch};
use meshchat_wire::{IndexEntry, decode};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::ConversationIndex;
use crate::log::Log;

/// This worker's copy of the index.
pub struct IndexFollower {
    /// Where it reads.
    pub log: Arc<Log>,
    /// The table lists are answered from.
    pub index: Arc<RwLock<ConversationIndex>>,
    /// Set once the table holds everything the topic held when reading began.
    pub loaded: Arc<AtomicBool>,
}

impl IndexFollower {
    /// Reads the index from its start into a fresh table (the one in use keeps answering
    /// meanwhile), swaps it in, and follows the topic until `stop`.
    pub async fn follow(&self, stop: CancellationToken) -> Result<(), KafkaError> {
        let topic = self.log.topics().index.clone();
        let partitions = self.log.partitions();
        let mut cfg = kafka::tail_consumer(self.log.kafka(), kafka::group::INDEX, TailFetch::LongPoll);
        // records are small and read once: a small prefetch, not librdkafka's 64 MB
        cfg.set("queued.max.messages.kbytes", "8192");
        let consumer: StreamConsumer = cfg.create()?;
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        tokio::task::block_in_place(|| -> Result<(), KafkaError> {
            for p in 0..partitions {
                let (low, high) = consumer.fetch_watermarks(&topic, p, META_TIMEOUT)?;
                if high > low {
                    ends.insert(p, high);
                }
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            Ok(())
        })?;
        consumer.assign(&tpl)?;
        let consumer = kafka::DropOffThread::new(consumer);
        let mut loading = Some(ConversationIndex::default());
        loop {
            if ends.is_empty()
                && let Some(table) = loading.take()
            {
                *self.index.write().unwrap_or_else(|p| p.into_inner()) = table;
                self.loaded.store(true, Ordering::Relaxed);
                // the table replaced and the reading's garbage: give the pages back
                meshchat_heap::release_free_heap();
                tracing::info!(
                    conversations = self.index.read().map_or(0, |i| i.len()),
                    "conversation index loaded"
                );
            }
            let m = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                m = consumer.recv() => m?,
            };
            let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            let entry = match m.payload().map(decode::<IndexEntry>) {
                None => None,
                Some(Ok(e)) => Some(e),
                Some(Err(e)) => {
                    tracing::warn!(key, error = %e, "skipping an index record this worker cannot read");
                    continue;
                }
            };
            let apply = |table: &mut ConversationIndex| match &entry {
                Some(e) => {
                    table.upsert(key, e);
                }
                None => table.remove(key),
            };
            match &mut loading {
                Some(table) => {
                    apply(table);
                    if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                        ends.remove(&m.partition());
                    }
                }
                None => apply(&mut self.index.write().unwrap_or_else(|p| p.into_inner())),
            }
        }
    }
}
