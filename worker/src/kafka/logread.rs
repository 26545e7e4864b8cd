//! Reads ranges of a partition directly (blocking consumer on a blocking thread): snapshot
//! restore and the "read the log" path for conversations this worker does not own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meshchat_crds::{ChatRecord, ConversationSnapshot, Topics, decode, partition_for};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaError, META_TIMEOUT};
use crate::store::{Conversation, content_of};

/// One record read from a partition.
pub struct Raw {
    /// Offset.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Payload, if any.
    pub payload: Option<Vec<u8>>,
}

fn reader(cfg: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    Ok(cfg
        .clone()
        .set("group.id", "meshchat-logread")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?)
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
    read_partition_with(&reader(cfg)?, topic, partition, from, each)
}

/// `read_partition` with a consumer the caller already has (a new client costs a connection
/// and a metadata round trip; a take-over makes several reads in a row).
pub fn read_partition_with(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    mut each: impl FnMut(Raw),
) -> Result<(), KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, META_TIMEOUT)?;
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

/// Latest snapshot of every conversation in `partitions` of the snapshot topic.
pub fn restore_snapshots(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<String, ConversationSnapshot>, KafkaError> {
    let mut latest = HashMap::new();
    for &p in partitions {
        read_partition_with(consumer, topic, p, 0, |raw| {
            let Some(payload) = raw.payload else { return };
            match decode::<ConversationSnapshot>(&payload) {
                Ok(s) => keep_newest(&mut latest, s),
                Err(e) => tracing::warn!(offset = raw.offset, error = %e, "skipping unreadable snapshot"),
            }
        })?;
    }
    Ok(latest)
}

/// Whether snapshot `s`, read after `have`, replaces it: the one covering more of the log wins
/// (ties: the later). Usually the later one in the topic; but a paused old owner may write a
/// snapshot after the new owner's, of an older state.
fn supersedes(s: &ConversationSnapshot, have: Option<&ConversationSnapshot>) -> bool {
    have.is_none_or(|have| s.last_offset >= have.last_offset)
}

fn keep_newest(latest: &mut HashMap<String, ConversationSnapshot>, s: ConversationSnapshot) {
    if supersedes(&s, latest.get(&s.conversation_id)) {
        latest.insert(s.conversation_id.clone(), s);
    }
}

/// One conversation rebuilt from its latest snapshot and the log after it; `None` when the
/// log has no record of it.
pub fn read_conversation(
    cfg: &ClientConfig,
    topics: &Topics,
    partitions: i32,
    id: &str,
    history_limit: usize,
    count: impl Fn(&str) -> u32,
) -> Result<Option<Conversation>, KafkaError> {
    let p = partition_for(id, partitions);
    let mut snapshot = None;
    read_partition(cfg, &topics.conversations, p, 0, |raw| {
        if raw.key.as_deref() == Some(id.as_bytes())
            && let Some(payload) = raw.payload
            && let Ok(s) = decode::<ConversationSnapshot>(&payload)
            && supersedes(&s, snapshot.as_ref())
        {
            snapshot = Some(s);
        }
    })?;
    let mut conv = snapshot.map(|s| Conversation::from_snapshot(s, &count));
    // fences count from the start of the retained log, so scan it all; apply from `from`
    let from = conv.as_ref().map_or(0, |c| c.last_offset + 1);
    let mut fence = 0u64;
    read_partition(cfg, &topics.messages, p, 0, |raw| {
        let Some(payload) = raw.payload else { return };
        let ours = raw.key.as_deref() == Some(id.as_bytes());
        if !ours && raw.key.as_deref() != Some(meshchat_crds::FENCE_KEY.as_bytes()) {
            return;
        }
        match decode::<ChatRecord>(&payload) {
            Ok(ChatRecord::EpochFence(f)) => fence = fence.max(f.epoch),
            Ok(record) if ours && raw.offset >= from => {
                let tokens = count(content_of(&record));
                conv.get_or_insert_with(|| Conversation::new(id)).apply(
                    raw.offset,
                    record,
                    tokens,
                    history_limit,
                    fence,
                );
            }
            _ => {}
        }
    })?;
    Ok(conv)
}
