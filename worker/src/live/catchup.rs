//! A resume's catch-up: one conversation's events after a client's cursor, read back from the
//! log up to its end when the client came back. Live delivery, subscribed before, takes over
//! from there (`cursor::Merge` drops what both give). The end of `chat.messages` is read before
//! that of `chat.stream`: every reply read then has its tokens before the stream's end.

use std::time::{Duration, Instant};

use meshchat_wire::kafka::{self, KafkaError, META_TIMEOUT, read_range_with};
use meshchat_wire::{ChatRecord, FENCE_KEY, PresenceEvent, ReplyChunk, Topics, decode};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::Hub;
use super::cursor::{Cursor, Pos, Positioned, Topic};
use super::sequencer::Sequencer;
use crate::ownership::{Epoch, Partition};
use crate::view::LiveEvent;

/// Token chunks read back, with their `chat.stream` offsets.
type Chunks = Vec<(i64, ReplyChunk)>;

/// `chat.messages` records read back, with their offsets and the highest fence before each.
type Records = Vec<(i64, ChatRecord, Epoch)>;

/// Why a conversation's events cannot be read back from a cursor.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The cursor is past the end of a log: not one this mesh gave out.
    #[error("event id {cursor} is past the end of the conversation's logs ({end})")]
    Beyond {
        /// The cursor asked for.
        cursor: Cursor,
        /// Where the logs end.
        end: Cursor,
    },
}

/// The events of conversation `key` (in `partition`) at or after `from`, in the order a client
/// is sent them (blocking; call from a blocking thread).
pub fn catch_up(
    cfg: &ClientConfig,
    topics: &Topics,
    partition: Partition,
    key: &str,
    from: Cursor,
    hub: &Hub,
) -> Result<Vec<Positioned>, CatchUpError> {
    let reader: BaseConsumer = kafka::range_reader(cfg, kafka::group::LOG_READ)
        .create()
        .map_err(KafkaError::from)?;
    let (_, messages_end) = reader
        .fetch_watermarks(&topics.messages, partition, META_TIMEOUT)
        .map_err(KafkaError::from)?;
    let (_, stream_end) = reader
        .fetch_watermarks(&topics.stream, partition, META_TIMEOUT)
        .map_err(KafkaError::from)?;
    let (_, users_end) = reader
        .fetch_watermarks(&topics.users, partition, META_TIMEOUT)
        .map_err(KafkaError::from)?;
    let end = Cursor {
        messages: messages_end,
        stream: stream_end,
        users: users_end,
    };
    if !from.within(&end) {
        return Err(CatchUpError::Beyond { cursor: from, end });
    }
    let ours = |k: &Option<Vec<u8>>| k.as_deref() == Some(key.as_bytes());
    let mut out = Vec::new();
    read_range_with(
        &reader,
        &topics.users,
        partition,
        from.users,
        Some(end.users),
        |raw| {
            if ours(&raw.key)
                && let Some(Ok(e)) = raw.payload.as_deref().map(decode::<PresenceEvent>)
            {
                out.push(Positioned {
                    pos: Pos::new(Topic::Users, raw.offset),
                    event: LiveEvent::Presence {
                        user_id: e.user_id,
                        kind: e.kind,
                    },
                });
            }
        },
    )?;
    // a reply counts by the fences before it: the fan-out knows them from where it started;
    // an older cursor reads them from the start of the kept log
    let known = hub.fence_before(partition, from.messages);
    let mut fence: Epoch = known.unwrap_or(0);
    let mut records = Vec::new();
    let scan_from = if known.is_some() { from.messages } else { 0 };
    read_range_with(
        &reader,
        &topics.messages,
        partition,
        scan_from,
        Some(end.messages),
        |raw| {
            let Some(payload) = raw.payload.as_deref() else {
                return;
            };
            if raw.key.as_deref() == Some(FENCE_KEY.as_bytes()) {
                if let Ok(ChatRecord::EpochFence(f)) = decode::<ChatRecord>(payload) {
                    fence = fence.max(f.epoch);
                }
            } else if ours(&raw.key)
                && raw.offset >= from.messages
                && let Ok(record) = decode::<ChatRecord>(payload)
            {
                records.push((raw.offset, record, fence));
            }
        },
    )?;
    let mut chunks = Vec::new();
    read_range_with(
        &reader,
        &topics.stream,
        partition,
        from.stream,
        Some(end.stream),
        |raw| {
            if ours(&raw.key)
                && let Some(Ok(c)) = raw.payload.as_deref().map(decode::<ReplyChunk>)
            {
                chunks.push((raw.offset, c));
            }
        },
    )?;
    // a deletion in the range: nothing before it is shown again
    if let Some(at) = records
        .iter()
        .rposition(|(_, r, _)| matches!(r, ChatRecord::ConversationDeleted(_)))
    {
        let deleted_at = records[at].0;
        records.drain(..=at);
        chunks.retain(|(_, c)| c.user_offset > deleted_at);
    }
    out.extend(sequence(end.messages, chunks, records, fence));
    Ok(out)
}

/// Orders what was read as live delivery would: messages in order, each reply after its
/// tokens; tokens of a reply not written yet come last. A reply waiting for tokens then is
/// released (the client had them, or they are older than what the stream keeps).
/// `messages_end`: where the read of `chat.messages` ended.
fn sequence(messages_end: i64, chunks: Chunks, records: Records, fence: Epoch) -> Vec<Positioned> {
    const HOLD: Duration = Duration::from_secs(1);
    let now = Instant::now();
    let mut seq = Sequencer::new(HOLD);
    let mut out = Vec::new();
    let mut chunks = chunks;
    for (offset, record, at_fence) in records {
        if let ChatRecord::AgentReply(r) = &record {
            let (mine, rest): (Vec<_>, Vec<_>) = chunks
                .into_iter()
                .partition(|(_, c)| c.in_reply_to == r.in_reply_to);
            chunks = rest;
            if mine.is_empty() {
                seq.streamed(r);
            }
            for (at, c) in mine {
                out.extend(seq.on_chunk(at, c, offset, fence, now));
            }
        }
        out.extend(seq.on_message(offset, record, at_fence, now));
    }
    // tokens of a message written after the read stay with live delivery
    for (at, c) in chunks {
        out.extend(seq.on_chunk(at, c, messages_end, fence, now));
    }
    out.extend(seq.on_tick(now + 2 * HOLD));
    out
}

#[cfg(test)]
mod tests;
