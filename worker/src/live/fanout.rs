//! The fan-out consumer: no consumer group membership, no commits — it serves from the tail.
//!
//! It must know every partition's latest epoch fence before it serves anything, or a zombie's
//! reply written after a fence it never read would reach live clients. So it reads
//! `chat.messages` from the owners' committed offsets (whose metadata carries the highest fence
//! before them) up to the tail silently, learning fences only, then serves from the tail.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshchat_crds::{ChatRecord, FENCE_KEY, PresenceEvent, ReplyChunk, Topics, decode};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::Sequencer;
use crate::hub::Hub;
use crate::kafka::{KafkaError, META_TIMEOUT, commit_start};
use crate::view::LiveEvent;

/// How long a final reply waits for chunks that have not arrived.
const HOLD: Duration = Duration::from_millis(500);

/// Where the fan-out reads.
#[derive(Clone)]
pub struct FanoutSource {
    /// Kafka client settings.
    pub kafka: ClientConfig,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of chat.messages.
    pub partitions: i32,
    /// This worker (names the fan-out's client group).
    pub node_id: String,
    /// The owners' consumer group (its commits carry the fences before them).
    pub owner_group: String,
    /// See [`crate::kafka::fetch_tail`].
    pub fetch_batch_ms: u32,
}

/// Runs the fan-out until `shutdown`.
pub async fn run_fanout(
    source: FanoutSource,
    hub: Arc<Hub>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let FanoutSource {
        kafka,
        topics,
        partitions,
        node_id,
        owner_group,
        fetch_batch_ms,
    } = source;
    let mut cfg = kafka.clone();
    cfg.set("group.id", format!("meshchat-fanout-{node_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    // presence events are rare and need no order with the rest: a consumer of their own keeps
    // chat.users' partitions out of every fetch of the busy topics (each partition listed in a
    // fetch costs the broker and librdkafka, which sends full fetch requests)
    let mut presence_cfg = cfg.clone();
    crate::kafka::fetch_tail(&mut presence_cfg, 0);
    let presence: StreamConsumer = presence_cfg.create()?;
    crate::kafka::fetch_tail(&mut cfg, fetch_batch_ms);
    let consumer: StreamConsumer = cfg.create()?;
    let mut presence_tpl = TopicPartitionList::new();
    // Serve exactly from the high watermarks (not `Offset::End`, which librdkafka resolves
    // lazily and may miss records of topics created moments ago), so `position` is exact.
    let mut tpl = TopicPartitionList::new();
    let mut position: HashMap<i32, i64> = HashMap::new();
    // highest epoch fence read per partition: older replies and chunks are a zombie's
    let mut fences: HashMap<i32, u64> = HashMap::new();
    let commits: BaseConsumer = kafka.clone().set("group.id", &owner_group).create()?;
    tokio::task::block_in_place(|| -> Result<(), KafkaError> {
        // commits first: a commit read now lies before the high watermarks read next
        let mut owned = TopicPartitionList::new();
        for p in 0..partitions {
            owned.add_partition(&topics.messages, p);
        }
        let committed = commits.committed_offsets(owned, META_TIMEOUT)?;
        for p in 0..partitions {
            let (_, high) = presence.fetch_watermarks(&topics.users, p, META_TIMEOUT)?;
            presence_tpl.add_partition_offset(&topics.users, p, Offset::Offset(high))?;
            for topic in [&topics.messages, &topics.stream] {
                let (low, high) = consumer.fetch_watermarks(topic, p, META_TIMEOUT)?;
                if topic != &topics.messages {
                    tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
                    continue;
                }
                position.insert(p, high);
                let (from, fence) = commit_start(&committed, topic, p, low);
                fences.insert(p, fence);
                tpl.add_partition_offset(topic, p, Offset::Offset(from.min(high)))?;
            }
        }
        Ok(())
    })?;
    drop(commits);
    consumer.assign(&tpl)?;
    presence.assign(&presence_tpl)?;
    // records of chat.messages below these offsets were written before we started: fences only
    let silent_until = position.clone();
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sequencers: HashMap<String, Sequencer> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut prune = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let now = Instant::now();
                for (conv, seq) in sequencers.iter_mut().filter(|(_, s)| s.is_waiting()) {
                    publish(&hub, conv, seq.on_tick(now));
                }
            }
            _ = prune.tick() => {
                hub.prune();
                sequencers.retain(|conv, _| hub.watched(conv));
            }
            m = presence.recv() => match m {
                Ok(m) => {
                    let Some(conv) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
                    if hub.watched(conv)
                        && let Some(Ok(e)) = m.payload().map(decode::<PresenceEvent>)
                    {
                        hub.publish(conv, LiveEvent::Presence { user_id: e.user_id, kind: e.kind });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "fan-out presence consume error"),
            },
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "fan-out consume error");
                        continue;
                    }
                };
                let p = m.partition();
                let topic = m.topic();
                let silent = topic == topics.messages && silent_until.get(&p).is_some_and(|h| m.offset() < *h);
                if topic == topics.messages && !silent {
                    position.insert(p, m.offset() + 1);
                }
                let Some(conv) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
                if topic == topics.messages
                    && conv == FENCE_KEY
                    && let Some(Ok(ChatRecord::EpochFence(f))) = m.payload().map(decode::<ChatRecord>)
                {
                    let e = fences.entry(p).or_default();
                    *e = (*e).max(f.epoch);
                    continue;
                }
                if silent || !hub.watched(conv) {
                    continue;
                }
                let fence = fences.get(&p).copied().unwrap_or(0);
                let Some(payload) = m.payload() else { continue };
                let now = Instant::now();
                let events = if topic == topics.messages {
                    match decode::<ChatRecord>(payload) {
                        Ok(ChatRecord::AgentReply(r)) if r.epoch < fence => continue,
                        Ok(r) => sequencer(&mut sequencers, conv).on_message(m.offset(), r, now),
                        Err(_) => continue,
                    }
                } else {
                    match decode::<ReplyChunk>(payload) {
                        Ok(c) if c.epoch < fence => continue,
                        Ok(c) => {
                            let pos = position.get(&p).copied().unwrap_or(0);
                            sequencer(&mut sequencers, conv).on_chunk(c, pos, now)
                        }
                        Err(_) => continue,
                    }
                };
                publish(&hub, conv, events);
            }
        }
    }
}

fn sequencer<'a>(map: &'a mut HashMap<String, Sequencer>, conv: &str) -> &'a mut Sequencer {
    map.entry(conv.to_string())
        .or_insert_with(|| Sequencer::new(HOLD))
}

fn publish(hub: &Hub, conv: &str, events: Vec<LiveEvent>) {
    for e in events {
        hub.publish(conv, e);
    }
}
