//! The log: this worker's connection to Kafka. It creates the topics, owns the one producer,
//! appends what clients send, publishes mesh events and presence, reads a conversation back
//! from the log for workers that do not own it, and probes whether Kafka answers.

mod history;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meshchat_wire::kafka::{self, KafkaError, Producer};
use meshchat_wire::{
    ChatRecord, MeshEvent, PresenceEvent, SCHEMA_VERSION, SystemEvent, Topics, UserMessage, encode,
    partition_for,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::ownership::Partition;
use crate::store::{Conversation, Keep};
use crate::telemetry;

/// How long a worker that cannot use Kafka listens for the reason (a refused login, say).
const REFUSAL_WAIT: Duration = Duration::from_secs(3);

/// How to reach Kafka and lay out the topics.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Extra librdkafka settings.
    pub properties: Vec<(String, String)>,
    /// SASL credentials (from a Secret, never the config file).
    pub sasl: Option<(String, String)>,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Partitions when creating the conversation topics.
    pub partitions: i32,
    /// Replication factor when creating topics.
    pub replication_factor: i32,
    /// Their `min.insync.replicas` (None: the broker's default).
    pub min_insync_replicas: Option<i32>,
}

/// This worker's Kafka: settings, topics, partition counts and the producer.
pub struct Log {
    kafka: ClientConfig,
    topics: Topics,
    partitions: i32,
    events_partitions: i32,
    producer: Producer,
    owner_group: String,
    reachable: AtomicBool,
    /// When the probe last found Kafka answering again after it did not.
    came_back: std::sync::Mutex<Option<Instant>>,
    /// The last mesh event of this worker the broker acknowledged: (partition, offset).
    own_event: std::sync::Mutex<Option<(i32, i64)>>,
    /// The last `chat.messages` record of this worker the broker acknowledged, per partition.
    own_messages: std::sync::Mutex<std::collections::HashMap<i32, i64>>,
}

// === impl Log ===

impl Log {
    /// Connects, creating missing topics (retrying for up to two minutes while Kafka starts).
    pub async fn connect(settings: &LogSettings) -> anyhow::Result<Self> {
        let mut cfg = kafka::client_config(&settings.bootstrap, "meshchat-worker", &settings.properties);
        if let Some((user, password)) = &settings.sasl {
            cfg.set("sasl.username", user).set("sasl.password", password);
        }
        let topics = Topics::with_prefix(&settings.topic_prefix);
        let deadline = Instant::now() + Duration::from_secs(120);
        let partitions = loop {
            match kafka::ensure_topics(
                &cfg,
                &topics,
                settings.partitions,
                settings.replication_factor,
                settings.min_insync_replicas,
            )
            .await
            {
                Ok(n) => break n,
                Err(e @ KafkaError::Topic { .. }) => return Err(e.into()),
                Err(e) if Instant::now() < deadline => {
                    // the admin client's timeout does not say why: a polled client hears it
                    let probe = cfg.clone();
                    let why = tokio::task::spawn_blocking(move || kafka::refusal(&probe, REFUSAL_WAIT))
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    tracing::warn!(error = %e, reason = %why, bootstrap = %settings.bootstrap, "Kafka not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => anyhow::bail!("Kafka at {} unreachable: {e}", settings.bootstrap),
            }
        };
        if partitions != settings.partitions {
            tracing::warn!(
                configured = settings.partitions,
                actual = partitions,
                "chat.messages already exists; using its partition count"
            );
        }
        let events_partitions = kafka::partition_count(&cfg, &topics.events).await?;
        Ok(Self {
            producer: Producer::new(&cfg)?,
            owner_group: kafka::group::owners(&settings.topic_prefix),
            kafka: cfg,
            topics,
            partitions,
            events_partitions,
            reachable: AtomicBool::new(true),
            came_back: std::sync::Mutex::new(None),
            own_event: std::sync::Mutex::new(None),
            own_messages: std::sync::Mutex::default(),
        })
    }

    /// Client settings, for the consumers the components build.
    pub fn kafka(&self) -> &ClientConfig {
        &self.kafka
    }

    /// Topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Partitions of `chat.messages`.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The owners' consumer group (their commits carry the fence before them).
    pub fn owner_group(&self) -> &str {
        &self.owner_group
    }

    /// The producer every write goes through.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The partition a conversation lives on.
    pub fn partition_of(&self, conversation: &str) -> Partition {
        partition_for(conversation, self.partitions)
    }

    /// Appends a user message to its conversation's log; answers once the broker acknowledged it.
    pub async fn append(&self, message: UserMessage) -> Result<i64, KafkaError> {
        self.append_record(&ChatRecord::UserMessage(message)).await
    }

    /// Appends a conversation's record (keyed by its conversation) and waits for the broker.
    pub async fn append_record(&self, record: &ChatRecord) -> Result<i64, KafkaError> {
        let key = record.key();
        let partition = self.partition_of(&key);
        let bytes = encode(record)?;
        // the record carries its trace on: its owner's answer and the live deliveries join it
        let span = telemetry::send_span(&self.topics.messages, partition);
        let headers = telemetry::record_headers(&span);
        let sent = self
            .producer
            .send_with(&self.topics.messages, partition, &key, &bytes, headers)
            .instrument(span.clone())
            .await;
        let offset = telemetry::sent(&span, sent)?;
        self.note_own_message(partition, offset);
        Ok(offset)
    }

    /// A record this worker wrote to `chat.messages` was acknowledged at `offset` of `partition`:
    /// its live fan-out must read it back.
    pub fn note_own_message(&self, partition: i32, offset: i64) {
        let mut own = self.own_messages.lock().unwrap_or_else(|e| e.into_inner());
        let last = own.entry(partition).or_insert(offset);
        *last = (*last).max(offset);
    }

    /// The last `chat.messages` record of this worker the broker acknowledged in `partition`.
    pub fn own_message_in(&self, partition: i32) -> Option<i64> {
        let own = self.own_messages.lock().unwrap_or_else(|e| e.into_inner());
        own.get(&partition).copied()
    }

    /// Publishes a mesh event keyed `key` and waits for the broker.
    pub async fn publish_event(&self, key: &str, event: &MeshEvent) -> Result<i64, KafkaError> {
        let bytes = encode(event)?;
        let p = partition_for(key, self.events_partitions);
        let offset = self.producer.send(&self.topics.events, p, key, &bytes).await?;
        note_latest(&self.own_event, p, offset);
        Ok(offset)
    }

    /// The last mesh event of this worker the broker acknowledged: (partition, offset); the
    /// mesh view must read it back.
    pub fn own_event(&self) -> Option<(i32, i64)> {
        *self.own_event.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a mesh event keyed `key` (handoff steps: informational, a lost one delays nothing
    /// but a new owner's wait for a release, which times out).
    pub fn publish_event_nowait(&self, key: &str, event: &MeshEvent) {
        match encode(event) {
            Ok(bytes) => {
                let p = partition_for(key, self.events_partitions);
                self.producer.send_nowait(&self.topics.events, p, key, &bytes);
            }
            Err(e) => tracing::warn!(error = %e, "could not encode a mesh event"),
        }
    }

    /// Publishes a lifecycle event (`workerStarted`, `workerStopping`), waiting up to 5 s.
    pub async fn publish_system(&self, node: &str, kind: &str, detail: &str) {
        let event = MeshEvent::System(SystemEvent {
            v: SCHEMA_VERSION,
            node: node.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
            timestamp: OffsetDateTime::now_utc(),
        });
        if let Ok(Err(e)) =
            tokio::time::timeout(Duration::from_secs(5), self.publish_event(node, &event)).await
        {
            tracing::warn!(error = %e, "could not publish {kind}");
        }
    }

    /// Queues a presence event (a lost one is a stale "online").
    pub fn publish_presence(&self, event: &PresenceEvent) {
        match encode(event) {
            Ok(bytes) => {
                let key = event.key();
                let p = self.partition_of(&key);
                self.producer.send_nowait(&self.topics.users, p, &key, &bytes);
            }
            Err(e) => tracing::warn!(error = %e, "could not encode presence"),
        }
    }

    /// One conversation (by key) rebuilt from its latest snapshot and the log after it
    /// (blocking: call from a blocking thread); `None` when the log has no record of it.
    pub fn read_conversation(
        &self,
        key: &str,
        keep: Keep,
        count: impl Fn(&str) -> u32,
    ) -> Result<Option<Conversation>, KafkaError> {
        history::read_conversation(&self.kafka, &self.topics, self.partitions, key, keep, count)
    }

    /// A conversation's whole history as `chat.messages` keeps it (blocking: call from a
    /// blocking thread).
    pub fn read_history(
        &self,
        key: &str,
        count: impl Fn(&str) -> u32,
    ) -> Result<Option<Conversation>, KafkaError> {
        history::read_history(&self.kafka, &self.topics, self.partitions, key, count)
    }

    /// An evicted conversation brought back (blocking: call from a blocking thread): its
    /// snapshot at `offset` of partition `p` of the snapshot topic, or — if that record is gone —
    /// the conversation rebuilt from the log.
    pub fn bring_back(
        &self,
        key: &str,
        p: Partition,
        offset: i64,
        keep: Keep,
        count: impl Fn(&str) -> u32,
    ) -> Result<Option<Conversation>, KafkaError> {
        let consumer: BaseConsumer = kafka::range_reader(&self.kafka, kafka::group::LOG_READ).create()?;
        let raw = kafka::read_one(&consumer, &self.topics.conversations, p, offset)?;
        let snapshot = raw
            .filter(|raw| raw.key.as_deref() == Some(key.as_bytes()))
            .and_then(|raw| raw.payload)
            .and_then(|payload| meshchat_wire::decode::<meshchat_wire::ConversationSnapshot>(&payload).ok());
        match snapshot {
            Some(s) => {
                let mut conv = Conversation::from_snapshot(s, &count);
                conv.snapshot_offset = Some(offset);
                Ok(Some(conv))
            }
            None => self.read_conversation(key, keep, count),
        }
    }

    /// The offset of reply `reply_id` of conversation `key` in partition `p` of the messages
    /// topic, looking from `from` to the end (blocking: call from a blocking thread); `None`
    /// when it is not there.
    pub fn find_reply(
        &self,
        p: Partition,
        from: i64,
        key: &str,
        reply_id: &str,
    ) -> Result<Option<i64>, KafkaError> {
        let consumer: BaseConsumer = kafka::range_reader(&self.kafka, kafka::group::LOG_READ).create()?;
        let mut found = None;
        kafka::read_partition_with(&consumer, &self.topics.messages, p, from, |raw| {
            if found.is_some() || raw.key.as_deref() != Some(key.as_bytes()) {
                return;
            }
            let reply = raw
                .payload
                .and_then(|payload| meshchat_wire::decode::<meshchat_wire::ChatRecord>(&payload).ok());
            if let Some(meshchat_wire::ChatRecord::AgentReply(r)) = reply
                && r.id == reply_id
            {
                found = Some(raw.offset);
            }
        })?;
        Ok(found)
    }

    /// Kafka answered the last probe.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Kafka came back within `window` after the probe found it unreachable (clients may
    /// come out of that unable to read on; see the owner's stall watch).
    pub fn came_back_within(&self, window: Duration) -> bool {
        self.came_back
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// Asks Kafka for metadata every 3 s until `stop`, marking it (un)reachable.
    pub async fn probe(self: Arc<Self>, stop: CancellationToken) {
        let create = || kafka::manual_consumer(&self.kafka, kafka::group::PROBE).create::<BaseConsumer>();
        let mut consumer: Option<Arc<BaseConsumer>> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            // a probe that failed asks with a fresh client next time: librdkafka can leave one
            // unable to fetch metadata for good after the broker was fenced, and a worker that
            // believes Kafka away refuses every send
            let c = match consumer.take() {
                Some(c) => c,
                None => match create() {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot create the Kafka probe");
                        self.reachable.store(false, Ordering::Relaxed);
                        continue;
                    }
                },
            };
            let (probe, t) = (c.clone(), self.topics.messages.clone());
            let reachable = tokio::task::spawn_blocking(move || {
                probe.fetch_metadata(Some(&t), Duration::from_secs(3)).is_ok()
            })
            .await
            .unwrap_or(false);
            if reachable {
                consumer = Some(c);
            } else {
                // closing a client joins its threads: not on the runtime
                drop(kafka::DropOffThread::new(c));
            }
            if self.reachable.swap(reachable, Ordering::Relaxed) != reachable {
                tracing::warn!(reachable, "Kafka reachability changed");
                if reachable && let Ok(mut at) = self.came_back.lock() {
                    *at = Some(Instant::now());
                }
            }
        }
    }
}

/// Remembers the newest acknowledged record (partition, offset) of this worker in `slot`.
fn note_latest(slot: &std::sync::Mutex<Option<(i32, i64)>>, partition: i32, offset: i64) {
    let mut own = slot.lock().unwrap_or_else(|e| e.into_inner());
    if own.is_none_or(|(q, o)| q != partition || o < offset) {
        *own = Some((partition, offset));
    }
}
