//! The "read the log" path: one conversation rebuilt from its latest snapshot and the log after
//! it, for a worker that does not own it.

use meshchat_wire::kafka::{KafkaError, read_partition, supersedes};
use meshchat_wire::{ChatRecord, ConversationSnapshot, FENCE_KEY, Topics, decode, partition_for};
use rdkafka::ClientConfig;

use crate::ownership::Fences;
use crate::store::{Conversation, Keep, content_of};

/// One conversation (by its key) rebuilt from its latest snapshot and the log after it; `None`
/// when the log has no record of it.
pub fn read_conversation(
    cfg: &ClientConfig,
    topics: &Topics,
    partitions: i32,
    key: &str,
    keep: Keep,
    count: impl Fn(&str) -> u32,
) -> Result<Option<Conversation>, KafkaError> {
    let p = partition_for(key, partitions);
    let mut snapshot = None;
    read_partition(cfg, &topics.conversations, p, 0, |raw| {
        if raw.key.as_deref() != Some(key.as_bytes()) {
            return;
        }
        let Some(payload) = raw.payload else {
            // a tombstone: the conversation was deleted; what the log holds after is all
            snapshot = None;
            return;
        };
        if let Ok(s) = decode::<ConversationSnapshot>(&payload)
            && supersedes(&s, snapshot.as_ref())
        {
            snapshot = Some(s);
        }
    })?;
    let conv = snapshot.map(|s| Conversation::from_snapshot(s, &count));
    replay(cfg, topics, p, key, conv, keep, count)
}

/// One conversation's whole history as `chat.messages` still keeps it (no snapshot: a
/// snapshot holds only the newest part); `None` when the log has no record of it.
pub fn read_history(
    cfg: &ClientConfig,
    topics: &Topics,
    partitions: i32,
    key: &str,
    count: impl Fn(&str) -> u32,
) -> Result<Option<Conversation>, KafkaError> {
    let keep = Keep {
        entries: usize::MAX,
        bytes: usize::MAX,
        pending: usize::MAX,
        participants: usize::MAX,
        interrupt: false,
    };
    let p = partition_for(key, partitions);
    let mut conv = replay(cfg, topics, p, key, None, keep, count)?;
    if let Some(c) = &mut conv {
        // what retention removed is gone: older history than this does not exist any more
        c.trimmed = false;
    }
    Ok(conv)
}

/// Applies the conversation's records of partition `p` to `conv` (those after what it holds).
fn replay(
    cfg: &ClientConfig,
    topics: &Topics,
    p: i32,
    key: &str,
    mut conv: Option<Conversation>,
    keep: Keep,
    count: impl Fn(&str) -> u32,
) -> Result<Option<Conversation>, KafkaError> {
    // fences count from the start of the retained log, so scan it all; apply from `from`
    let from = conv.as_ref().map_or(0, Conversation::read_from);
    let mut fences = Fences::default();
    read_partition(cfg, &topics.messages, p, 0, |raw| {
        let Some(payload) = raw.payload else { return };
        let ours = raw.key.as_deref() == Some(key.as_bytes());
        if !ours && raw.key.as_deref() != Some(FENCE_KEY.as_bytes()) {
            return;
        }
        match decode::<ChatRecord>(&payload) {
            Ok(ChatRecord::EpochFence(f)) => {
                fences.observe(p, f.epoch);
            }
            Ok(record) if ours && raw.offset >= from => {
                let tokens = count(content_of(&record));
                conv.get_or_insert_with(|| Conversation::new(key)).apply(
                    raw.offset,
                    record,
                    tokens,
                    keep,
                    fences.get(p),
                );
            }
            _ => {}
        }
    })?;
    // deleted and nothing since: no conversation
    Ok(conv.filter(|c| !c.entries.is_empty() || !c.participants.is_empty()))
}
