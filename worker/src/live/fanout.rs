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
use meshchat_wire::{ChatRecord, FENCE_KEY, PresenceEvent, ReplyChunk, Topics, decode};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::cursor::{Pos, Positioned, Topic};
use super::hub::LINGER;
use super::{Hub, Sequencer};
use crate::log::Log;
use crate::mesh::echo::{ECHO_LIMIT, EchoWatch};
use crate::ownership::{Epoch, Fences, Partition};
use crate::telemetry;
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

/// Where the fan-out serves a partition from (records before these were there before it).
#[derive(Clone, Copy, Debug)]
struct Served {
    /// `chat.messages` records below this are read for their fences only.
    silent_until: i64,
    /// Its next offset of `chat.messages` (past the silent part).
    next: i64,
    /// `chat.stream` and `chat.users` records below these are left over from an earlier
    /// reading of the partition.
    stream_from: i64,
    users_from: i64,
}

/// The fan-out's Kafka clients.
struct Clients {
    consumer: kafka::DropOffThread<StreamConsumer>,
    presence: kafka::DropOffThread<StreamConsumer>,
    /// Reads the owners' commits (where the fences are known from) and the logs' ends.
    commits: Arc<BaseConsumer>,
}

// === impl Fanout ===

impl Fanout {
    /// Delivers live events until `stop`, reading the partitions subscribers ask for.
    pub async fn deliver(&self, stop: CancellationToken) -> Result<(), KafkaError> {
        let (topics, hub) = (self.log.topics(), &self.hub);
        // started again after a failure: events may have been missed meanwhile; every stream
        // this worker read ends, and its feed goes on from its client's last event id (read
        // back from the log)
        hub.restart();
        let base = self.log.kafka();
        let group = kafka::group::fanout(&self.node_id);
        // its own client id, so the broker's request log tells live delivery's fetches apart
        let client_id = format!("{}-live", self.node_id);
        // presence events are rare and need no order with the rest: a consumer of their own
        // keeps chat.users' partitions out of every fetch of the busy topics (each partition
        // listed in a fetch costs the broker and librdkafka, which sends full fetch requests)
        let presence: StreamConsumer = kafka::tail_consumer(base, &group, TailFetch::LongPoll)
            .set("client.id", &client_id)
            .create()?;
        let consumer: StreamConsumer = kafka::tail_consumer(base, &group, self.fetch)
            .set("client.id", &client_id)
            .create()?;
        consumer.assign(&TopicPartitionList::new())?;
        presence.assign(&TopicPartitionList::new())?;
        let commits: BaseConsumer = kafka::manual_consumer(base, self.log.owner_group()).create()?;
        // given up on a thread of their own: a wedged consumer can block in its close
        let clients = Clients {
            consumer: kafka::DropOffThread::new(consumer),
            presence: kafka::DropOffThread::new(presence),
            commits: Arc::new(commits),
        };
        let mut served: HashMap<Partition, Served> = HashMap::new();
        // a zombie's replies and chunks are void behind the fences read
        let mut fences = Fences::default();
        let first = tokio::task::block_in_place(|| starts(&clients.commits, topics, &hub.waiting()))?;
        self.serve(&clients, &mut served, &mut fences, first)?;
        self.ready.store(true, Ordering::Relaxed);
        // partitions being started, off the loop: a slow broker answer delays their first
        // subscribers, not every stream this worker serves
        let mut starting: Option<tokio::task::JoinHandle<Result<Vec<Start>, KafkaError>>> = None;
        let mut sequencers: HashMap<String, Sequencer> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut prune = tokio::time::interval(Duration::from_secs(5));
        // what this worker wrote must come back: else the consumer is wedged (librdkafka can
        // leave one unable to fetch after the broker was fenced) and a fresh one takes over
        let mut look = tokio::time::interval(Duration::from_secs(2));
        let mut echo = EchoWatch::new(ECHO_LIMIT);
        let (consumer, presence) = (&clients.consumer, &clients.presence);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    hub.close();
                    return Ok(());
                }
                Some(p) = hub.asked(), if starting.is_none() => {
                    let mut asked: Vec<Partition> = std::iter::once(p)
                        .chain(hub.waiting())
                        .filter(|p| !served.contains_key(p))
                        .collect();
                    asked.sort_unstable();
                    asked.dedup();
                    if !asked.is_empty() {
                        let (commits, topics) = (clients.commits.clone(), topics.clone());
                        starting = Some(tokio::task::spawn_blocking(move || starts(&commits, &topics, &asked)));
                    }
                }
                Some(started) = async { match starting.as_mut() { Some(s) => Some(s.await), None => None } } => {
                    starting = None;
                    let started = started.map_err(|_| KafkaError::Timeout { what: "starting a live partition" })??;
                    self.serve(&clients, &mut served, &mut fences, started)?;
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for (conv, seq) in sequencers.iter_mut().filter(|(_, s)| s.is_waiting()) {
                        publish(hub, conv, seq.on_tick(now));
                    }
                }
                _ = look.tick() => {
                    let read: HashMap<i32, i64> = served.iter().map(|(p, s)| (*p, s.next - 1)).collect();
                    // only what it reads can come back to it: the first partition it reads
                    // holding something this worker wrote since, and not read yet if any is
                    let own: Vec<(i32, i64)> = served
                        .iter()
                        .filter_map(|(p, s)| self.log.own_message_in(*p).filter(|o| *o >= s.silent_until).map(|o| (*p, o)))
                        .collect();
                    let written = own.iter().find(|(p, o)| read.get(p).is_some_and(|r| r < o)).or(own.first()).copied();
                    if echo.observe(Instant::now(), written, &read) {
                        tracing::warn!("live delivery stopped reading what this worker wrote; reading again with a fresh Kafka client");
                        return Err(KafkaError::Timeout { what: "live fan-out reading chat.messages" });
                    }
                }
                _ = prune.tick() => {
                    let gone = hub.prune(Instant::now(), LINGER);
                    if !gone.is_empty() {
                        self.let_go(&clients, &mut served, &gone)?;
                        echo.forget(&gone);
                    }
                    sequencers.retain(|conv, _| hub.watched(conv));
                }
                m = presence.recv() => match m {
                    Ok(m) => {
                        let p = m.partition();
                        if served.get(&p).is_none_or(|s| m.offset() < s.users_from) {
                            continue;
                        }
                        hub.read_to(p, Topic::Users, m.offset() + 1);
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
                    // a record of a partition let go, or of an earlier reading of it
                    let Some(at) = served.get_mut(&p) else { continue };
                    if !on_messages && m.offset() < at.stream_from {
                        continue;
                    }
                    let silent = on_messages && m.offset() < at.silent_until;
                    if on_messages && !silent {
                        at.next = m.offset() + 1;
                        hub.read_to(p, Topic::Messages, m.offset() + 1);
                    } else if !on_messages {
                        hub.read_to(p, Topic::Stream, m.offset() + 1);
                    }
                    let messages_next = at.next;
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
                    // a message or reply that came with a trace: its live delivery joins it
                    let traced = on_messages
                        .then(|| telemetry::continued(m.topic(), p, m.offset(), m.headers()))
                        .flatten();
                    let _delivering = traced.as_ref().map(tracing::Span::enter);
                    let (now, fence) = (Instant::now(), fences.get(p));
                    let events = if on_messages {
                        match decode::<ChatRecord>(payload) {
                            Ok(r) => sequencer(&mut sequencers, conv).on_message(m.offset(), r, fence, now),
                            Err(_) => continue,
                        }
                    } else {
                        match decode::<ReplyChunk>(payload) {
                            Ok(c) => sequencer(&mut sequencers, conv).on_chunk(m.offset(), c, messages_next, fence, now),
                            Err(_) => continue,
                        }
                    };
                    publish(hub, conv, events);
                }
            }
        }
    }

    /// Starts reading `partitions` whose starts were read (`starts`): from the owners' commits
    /// silently up to the ends of the logs then, learning fences; from those ends, serving. Its
    /// waiting subscribers go on.
    fn serve(
        &self,
        clients: &Clients,
        served: &mut HashMap<Partition, Served>,
        fences: &mut Fences,
        starts: Vec<Start>,
    ) -> Result<(), KafkaError> {
        let (topics, hub) = (self.log.topics(), &self.hub);
        let mut tpl = TopicPartitionList::new();
        let mut presence_tpl = TopicPartitionList::new();
        let mut new = Vec::new();
        for st in starts {
            let p = st.partition;
            if served.contains_key(&p) {
                continue;
            }
            presence_tpl.add_partition_offset(&topics.users, p, Offset::Offset(st.users))?;
            tpl.add_partition_offset(&topics.stream, p, Offset::Offset(st.stream))?;
            tpl.add_partition_offset(&topics.messages, p, Offset::Offset(st.from))?;
            hub.read_to(p, Topic::Users, st.users);
            hub.read_to(p, Topic::Stream, st.stream);
            hub.read_to(p, Topic::Messages, st.high);
            hub.fences_from(p, st.from, st.fence);
            fences.observe(p, st.fence);
            served.insert(
                p,
                Served {
                    silent_until: st.high,
                    next: st.high,
                    stream_from: st.stream,
                    users_from: st.users,
                },
            );
            new.push(p);
        }
        if new.is_empty() {
            return Ok(());
        }
        clients.consumer.incremental_assign(&tpl)?;
        clients.presence.incremental_assign(&presence_tpl)?;
        for p in new {
            tracing::debug!(
                partition = p,
                "live delivery reads a partition its subscribers watch"
            );
            hub.ready(p);
        }
        Ok(())
    }

    /// Stops reading `partitions` (nobody here watched them for a while).
    fn let_go(
        &self,
        clients: &Clients,
        served: &mut HashMap<Partition, Served>,
        partitions: &[Partition],
    ) -> Result<(), KafkaError> {
        let topics = self.log.topics();
        let (mut tpl, mut presence_tpl) = (TopicPartitionList::new(), TopicPartitionList::new());
        for &p in partitions {
            if served.remove(&p).is_some() {
                tpl.add_partition(&topics.messages, p);
                tpl.add_partition(&topics.stream, p);
                presence_tpl.add_partition(&topics.users, p);
            }
        }
        if tpl.count() > 0 {
            tracing::debug!(?partitions, "live delivery lets go of partitions nobody watches");
            clients.consumer.incremental_unassign(&tpl)?;
            clients.presence.incremental_unassign(&presence_tpl)?;
        }
        Ok(())
    }
}

/// Where the fan-out starts reading a partition.
#[derive(Clone, Copy, Debug)]
struct Start {
    partition: Partition,
    /// `chat.messages`: the owners' committed offset (the highest fence before it: `fence`),
    /// read silently up to `high`, served from there.
    from: i64,
    fence: Epoch,
    high: i64,
    /// `chat.stream` and `chat.users`: served from these.
    stream: i64,
    users: i64,
}

/// Reads where the fan-out starts each of `partitions` (blocking: the owners' commits and the
/// logs' ends, a few broker round trips; run off the delivery loop). Serving exactly from the
/// high watermarks (not `Offset::End`, which librdkafka resolves lazily and may miss records of
/// topics created moments ago) keeps positions exact.
fn starts(
    commits: &BaseConsumer,
    topics: &Topics,
    partitions: &[Partition],
) -> Result<Vec<Start>, KafkaError> {
    // commits first: a commit read now lies before the high watermarks read next
    let mut owned = TopicPartitionList::new();
    for p in partitions {
        owned.add_partition(&topics.messages, *p);
    }
    let committed = commits.committed_offsets(owned, META_TIMEOUT)?;
    let mut out = Vec::new();
    for &p in partitions {
        let (_, users) = commits.fetch_watermarks(&topics.users, p, META_TIMEOUT)?;
        let (_, stream) = commits.fetch_watermarks(&topics.stream, p, META_TIMEOUT)?;
        let (low, high) = commits.fetch_watermarks(&topics.messages, p, META_TIMEOUT)?;
        let (from, fence) = commit_start(&committed, &topics.messages, p, low);
        out.push(Start {
            partition: p,
            from: from.min(high),
            fence,
            high,
            stream,
            users,
        });
    }
    Ok(out)
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
