//! The fan-out consumer: no consumer group membership, no commits — it serves from the tail.
//!
//! It must know every partition's latest epoch fence before it serves anything, or a zombie's
//! reply written after a fence it never read would reach live clients. So it reads
//! `chat.messages` from the owners' committed offsets (whose metadata carries the highest fence
//! before them) up to the tail silently, learning fences only, then serves from the tail.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meshchat_wire::kafka::{self, KafkaError, META_TIMEOUT, TailFetch, commit_start};
use meshchat_wire::{ChatRecord, FENCE_KEY, PresenceEvent, ReplyChunk, decode};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::cursor::{Pos, Positioned, Topic};
use super::{Hub, Sequencer};
use crate::log::Log;
use crate::mesh::echo::{ECHO_LIMIT, EchoWatch};
use crate::ownership::{Fences, Partition};
use crate::view::LiveEvent;

/// How long a final reply waits for chunks that have not arrived.
const HOLD: Duration = Duration::from_millis(500);

/// The fan-out of one worker.
pub struct Fanout {
    /// Where it reads.
    pub log: Arc<Log>,
    /// This worker (names the fan-out's client group).
    pub node_id: String,
    /// How its consumer fetches.
    pub fetch: TailFetch,
    /// Its subscribers.
    pub hub: Arc<Hub>,
    /// Set once it is assigned (clients connecting from then on miss nothing).
    pub ready: Arc<AtomicBool>,
}

// === impl Fanout ===

impl Fanout {
    /// Delivers live events until `stop`.
    pub async fn deliver(&self, stop: CancellationToken) -> Result<(), KafkaError> {
        let (topics, partitions, hub) = (self.log.topics(), self.log.partitions(), &self.hub);
        if self.ready.load(Ordering::Relaxed) {
            // started again after a failure: events may have been missed meanwhile; every live
            // stream ends, and its client resumes from its last event id (read back from the log)
            hub.close_all();
        }
        let base = self.log.kafka();
        let group = kafka::group::fanout(&self.node_id);
        // presence events are rare and need no order with the rest: a consumer of their own
        // keeps chat.users' partitions out of every fetch of the busy topics (each partition
        // listed in a fetch costs the broker and librdkafka, which sends full fetch requests)
        let presence: StreamConsumer = kafka::tail_consumer(base, &group, TailFetch::LongPoll).create()?;
        let consumer: StreamConsumer = kafka::tail_consumer(base, &group, self.fetch).create()?;
        let mut presence_tpl = TopicPartitionList::new();
        // Serve exactly from the high watermarks (not `Offset::End`, which librdkafka resolves
        // lazily and may miss records of topics created moments ago), so `position` is exact.
        let mut tpl = TopicPartitionList::new();
        let mut position: HashMap<Partition, i64> = HashMap::new();
        // a zombie's replies and chunks are void behind the fences read
        let mut fences = Fences::default();
        let commits: BaseConsumer = kafka::manual_consumer(base, self.log.owner_group()).create()?;
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
                hub.read_to(p, Topic::Users, high);
                let (_, high) = consumer.fetch_watermarks(&topics.stream, p, META_TIMEOUT)?;
                tpl.add_partition_offset(&topics.stream, p, Offset::Offset(high))?;
                hub.read_to(p, Topic::Stream, high);
                let (low, high) = consumer.fetch_watermarks(&topics.messages, p, META_TIMEOUT)?;
                position.insert(p, high);
                hub.read_to(p, Topic::Messages, high);
                let (from, fence) = commit_start(&committed, &topics.messages, p, low);
                fences.observe(p, fence);
                hub.fences_from(p, from.min(high), fence);
                tpl.add_partition_offset(&topics.messages, p, Offset::Offset(from.min(high)))?;
            }
            Ok(())
        })?;
        drop(commits);
        consumer.assign(&tpl)?;
        presence.assign(&presence_tpl)?;
        // given up on a thread of their own: a wedged consumer can block in its close
        let (consumer, presence) = (
            kafka::DropOffThread::new(consumer),
            kafka::DropOffThread::new(presence),
        );
        // records of chat.messages below these offsets were written before we started: fences only
        let silent_until = position.clone();
        self.ready.store(true, Ordering::Relaxed);
        let mut sequencers: HashMap<String, Sequencer> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut prune = tokio::time::interval(Duration::from_secs(5));
        // what this worker wrote must come back: else the consumer is wedged (librdkafka can
        // leave one unable to fetch after the broker was fenced) and a fresh one takes over
        let mut look = tokio::time::interval(Duration::from_secs(2));
        let mut echo = EchoWatch::new(ECHO_LIMIT);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let now = Instant::now();
                    for (conv, seq) in sequencers.iter_mut().filter(|(_, s)| s.is_waiting()) {
                        publish(hub, conv, seq.on_tick(now));
                    }
                }
                _ = look.tick() => {
                    let read: HashMap<i32, i64> = position.iter().map(|(p, next)| (*p, next - 1)).collect();
                    if echo.observe(Instant::now(), self.log.own_message(), &read) {
                        tracing::warn!("live delivery stopped reading what this worker wrote; reading again with a fresh Kafka client");
                        return Err(KafkaError::Timeout { what: "live fan-out reading chat.messages" });
                    }
                }
                _ = prune.tick() => {
                    hub.prune();
                    sequencers.retain(|conv, _| hub.watched(conv));
                }
                m = presence.recv() => match m {
                    Ok(m) => {
                        hub.read_to(m.partition(), Topic::Users, m.offset() + 1);
                        let Some(conv) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
                        if hub.watched(conv)
                            && let Some(Ok(e)) = m.payload().map(decode::<PresenceEvent>)
                        {
                            hub.publish(conv, Positioned {
                                pos: Pos::new(Topic::Users, m.offset()),
                                event: LiveEvent::Presence { user_id: e.user_id, kind: e.kind },
                            });
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
                    let on_messages = m.topic() == topics.messages;
                    let silent = on_messages && silent_until.get(&p).is_some_and(|h| m.offset() < *h);
                    if on_messages && !silent {
                        position.insert(p, m.offset() + 1);
                        hub.read_to(p, Topic::Messages, m.offset() + 1);
                    } else if !on_messages {
                        hub.read_to(p, Topic::Stream, m.offset() + 1);
                    }
                    let Some(conv) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
                    if on_messages
                        && conv == FENCE_KEY
                        && let Some(Ok(ChatRecord::EpochFence(f))) = m.payload().map(decode::<ChatRecord>)
                    {
                        fences.observe(p, f.epoch);
                        hub.fence_at(p, m.offset(), f.epoch);
                        continue;
                    }
                    if silent || !hub.watched(conv) {
                        continue;
                    }
                    let Some(payload) = m.payload() else { continue };
                    let (now, fence) = (Instant::now(), fences.get(p));
                    let events = if on_messages {
                        match decode::<ChatRecord>(payload) {
                            Ok(r) => sequencer(&mut sequencers, conv).on_message(m.offset(), r, fence, now),
                            Err(_) => continue,
                        }
                    } else {
                        match decode::<ReplyChunk>(payload) {
                            Ok(c) => {
                                let pos = position.get(&p).copied().unwrap_or(0);
                                sequencer(&mut sequencers, conv).on_chunk(m.offset(), c, pos, fence, now)
                            }
                            Err(_) => continue,
                        }
                    };
                    publish(hub, conv, events);
                }
            }
        }
    }
}

fn sequencer<'a>(map: &'a mut HashMap<String, Sequencer>, conv: &str) -> &'a mut Sequencer {
    map.entry(conv.to_string())
        .or_insert_with(|| Sequencer::new(HOLD))
}

fn publish(hub: &Hub, conv: &str, events: Vec<Positioned>) {
    for e in events {
        hub.publish(conv, e);
    }
}
