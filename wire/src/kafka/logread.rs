//! Reads ranges of a partition directly (blocking consumer on a blocking thread): snapshot
//! restore, the "read the log" path for conversations a worker does not own, and the balancer's
//! start (the latest table, recent events).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaError, META_TIMEOUT, group, range_reader};
use crate::{AssignmentTable, ConversationSnapshot, decode};

/// One record read from a partition.
pub struct Raw {
    /// Offset.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Payload, if any.
    pub payload: Option<Vec<u8>>,
}

/// Every record of `topic`/`partition` from `from` up to the high watermark at call time,
/// passed to `each` (blocking; call from a blocking thread).
pub fn read_partition(
    cfg: &ClientConfig,
    topic: &str,
    partition: i32,
    from: i64,
    each: impl FnMut(Raw),
) -> Result<(), KafkaError> {
    read_partition_with(
        &range_reader(cfg, group::LOG_READ).create()?,
        topic,
        partition,
        from,
        each,
    )
}

/// `read_partition` with a consumer the caller already has (a new client costs a connection
/// and a metadata round trip; a take-over makes several reads in a row).
pub fn read_partition_with(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    each: impl FnMut(Raw),
) -> Result<(), KafkaError> {
    read_range_with(consumer, topic, partition, from, None, each)
}

/// The records of `topic`/`partition` from `from` (or the oldest kept) up to `until` (not
/// included; the high watermark at call time when `None`), passed to `each` (blocking).
pub fn read_range_with(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    until: Option<i64>,
    mut each: impl FnMut(Raw),
) -> Result<(), KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, META_TIMEOUT)?;
    let high = until.map_or(high, |u| u.min(high));
    let start = from.max(low);
    if start >= high {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            return Err(KafkaError::Timeout {
                what: "partition read",
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => return Err(e.into()),
            // a reused client may still hand out a record of its previous assignment
            Some(Ok(m)) if m.topic() != topic || m.partition() != partition || m.offset() < start => {}
            Some(Ok(m)) => {
                let offset = m.offset();
                each(Raw {
                    offset,
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                });
                if offset + 1 >= high {
                    return Ok(());
                }
            }
        }
    }
}

/// A snapshot and its offset in the snapshot topic (where to fetch it again).
pub type StoredSnapshot = (ConversationSnapshot, i64);

/// Latest snapshot of every conversation in `partitions` of the snapshot topic, by key.
pub fn restore_snapshots(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<String, StoredSnapshot>, KafkaError> {
    let mut latest = HashMap::new();
    for &p in partitions {
        read_partition_with(consumer, topic, p, 0, |raw| {
            let Some(payload) = raw.payload else {
                // a tombstone: the conversation was deleted (a later snapshot is a new one)
                if let Some(key) = raw.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
                    latest.remove(key);
                }
                return;
            };
            match decode::<ConversationSnapshot>(&payload) {
                Ok(s) => keep_newest(&mut latest, s, raw.offset),
                Err(e) => tracing::warn!(offset = raw.offset, error = %e, "skipping unreadable snapshot"),
            }
        })?;
    }
    Ok(latest)
}

/// The record at `offset` of `topic`/`partition`, if it is still there (blocking). Compaction
/// may have removed it: then `None`.
pub fn read_one(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<Raw>, KafkaError> {
    let mut found = None;
    let (low, high) = consumer.fetch_watermarks(topic, partition, META_TIMEOUT)?;
    if offset < low || offset >= high {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) if m.topic() != topic || m.partition() != partition || m.offset() < offset => {}
            Some(Ok(m)) => {
                if m.offset() == offset {
                    found = Some(Raw {
                        offset,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                return Ok(found);
            }
        }
    }
    Err(KafkaError::Timeout { what: "record read" })
}

/// Whether snapshot `s`, read after `have`, replaces it: the one covering more of the log wins
/// (ties: the later). Usually the later one in the topic; but a paused old owner may write a
/// snapshot after the new owner's, of an older state.
pub fn supersedes(s: &ConversationSnapshot, have: Option<&ConversationSnapshot>) -> bool {
    have.is_none_or(|have| s.last_offset >= have.last_offset)
}

/// Keeps `s` if it supersedes what `latest` holds for its conversation — by key: the same id in
/// two tenants is two conversations, which may share a partition.
pub(super) fn keep_newest(
    latest: &mut HashMap<String, StoredSnapshot>,
    s: ConversationSnapshot,
    offset: i64,
) {
    let key = s.key();
    if supersedes(&s, latest.get(&key).map(|(have, _)| have)) {
        latest.insert(key, (s, offset));
    }
}

/// The latest table of `agent` in the compacted assignments topic (partition 0), if any.
pub fn latest_table(
    consumer: &BaseConsumer,
    topic: &str,
    agent: &str,
) -> Result<Option<AssignmentTable>, KafkaError> {
    let mut latest = None;
    read_partition_with(consumer, topic, 0, 0, |raw| {
        if raw.key.as_deref() == Some(agent.as_bytes())
            && let Some(Ok(t)) = raw.payload.as_deref().map(decode::<AssignmentTable>)
        {
            latest = Some(t);
        }
    })?;
    Ok(latest)
}

/// Offsets of the first records at or after `since_ms` (unix ms) in every partition of `topic`
/// (the end where nothing is that recent).
pub fn offsets_since(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    since_ms: u64,
) -> Result<TopicPartitionList, KafkaError> {
    let mut query = TopicPartitionList::new();
    for p in 0..partitions {
        query.add_partition_offset(
            topic,
            p,
            Offset::Offset(i64::try_from(since_ms).unwrap_or(i64::MAX)),
        )?;
    }
    let found = consumer.offsets_for_times(query, META_TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::End,
        };
        tpl.add_partition_offset(topic, e.partition(), offset)?;
    }
    Ok(tpl)
}
