//! The owner loop: consumes this worker's partitions of `chat.messages` from the committed
//! offset, keeps their conversations, answers unanswered user messages one at a time per
//! conversation, snapshots conversations and commits offsets. On start it restores snapshots
//! and replays the log without calling the LLM; only what is still unanswered at the end of
//! the replay is answered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshchat_crds::{
    ChatRecord, PresenceEvent, PresenceKind, SCHEMA_VERSION, Topics, decode, encode, partition_for,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::answer::{Answerer, Job};
use crate::context::{Role, Tokenizer, Turn, trim_to_budget};
use crate::kafka::{KafkaError, META_TIMEOUT, Producer, restore_snapshots};
use crate::metrics::{Metrics, PartitionLabel};
use crate::ownership::Ownership;
use crate::store::{Applied, Conversation, Store, content_of};

/// Settings and shared state of the owner loop.
pub struct OwnerLoop {
    /// Kafka client settings.
    pub kafka: ClientConfig,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of chat.messages.
    pub partitions: i32,
    /// Consumer group holding committed offsets (shared by all owners of this mesh).
    pub group_id: String,
    /// Ownership seam.
    pub ownership: Arc<Ownership>,
    /// Conversations of owned partitions (read by HTTP).
    pub store: Arc<RwLock<Store>>,
    /// Answers messages.
    pub answerer: Arc<Answerer>,
    /// Producer for snapshots and presence.
    pub producer: Producer,
    /// Token counter.
    pub tokenizer: Tokenizer,
    /// System prompt (empty for none).
    pub system_prompt: String,
    /// Context budget in tokens.
    pub context_tokens: u32,
    /// Time between snapshot rounds.
    pub snapshot_interval: Duration,
    /// Time in-flight answers get on shutdown.
    pub grace: Duration,
    /// Metrics.
    pub metrics: Metrics,
    /// Set when every owned partition is caught up.
    pub caught_up: Arc<AtomicBool>,
    /// This worker's id.
    pub node_id: String,
}

struct Progress {
    /// Next offset to consume, per partition.
    position: BTreeMap<i32, i64>,
    /// High watermark at assignment; reaching it ends the replay.
    target: BTreeMap<i32, i64>,
    /// Partitions whose replay is over (answers may start).
    live: BTreeSet<i32>,
}

// === impl OwnerLoop ===

impl OwnerLoop {
    /// Runs until `shutdown`, then drains: stops taking messages, gives in-flight answers the
    /// grace period, writes snapshots, commits offsets.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        let owned = self.ownership.owned();
        self.caught_up.store(false, Ordering::Relaxed);
        {
            // answers of an earlier (failed) run of this loop are gone; answer again
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.iter_mut().for_each(|c| c.in_flight = None);
        }
        self.restore(&owned).await?;
        let consumer: StreamConsumer = self
            .kafka
            .clone()
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        let mut progress = self.assign(&consumer, &owned).await?;
        let mut tasks = JoinSet::new();
        let ready: Vec<i32> = progress.live.iter().copied().collect();
        for p in ready {
            self.start_partition(p, &mut tasks);
        }
        self.update_caught_up(&owned, &progress);
        let mut snapshot_tick = tokio::time::interval(self.snapshot_interval);
        let mut lag_tick = tokio::time::interval(Duration::from_secs(2));
        let lag_reader: Arc<BaseConsumer> =
            Arc::new(self.kafka.clone().set("group.id", "meshchat-lag").create()?);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let (p, o) = (m.partition(), m.offset());
                        let payload = m.payload().map(<[u8]>::to_vec);
                        drop(m);
                        progress.position.insert(p, o + 1);
                        if let Some(payload) = payload {
                            self.handle(p, o, &payload, &progress, &mut tasks);
                        }
                        if !progress.live.contains(&p) && o + 1 >= progress.target.get(&p).copied().unwrap_or(0) {
                            progress.live.insert(p);
                            tracing::info!(partition = p, offset = o, "replay done; answering");
                            self.start_partition(p, &mut tasks);
                            self.update_caught_up(&owned, &progress);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = snapshot_tick.tick() => {
                    if let Err(e) = self.snapshot_and_commit(&consumer, &progress, CommitMode::Async).await {
                        tracing::warn!(error = %e, "snapshot round failed; will retry");
                    }
                }
                _ = lag_tick.tick() => self.report_lag(&lag_reader, &progress),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        self.drain(&consumer, &progress, tasks).await
    }

    async fn restore(&self, owned: &[i32]) -> Result<(), KafkaError> {
        let kafka = self.kafka.clone();
        let topic = self.topics.conversations.clone();
        let parts = owned.to_vec();
        let snapshots = tokio::task::spawn_blocking(move || restore_snapshots(&kafka, &topic, &parts))
            .await
            .map_err(|_| KafkaError::Timeout {
                what: "snapshot restore",
            })??;
        let n = snapshots.len();
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        for (_, s) in snapshots {
            store.restore(Conversation::from_snapshot(s, |t| self.tokenizer.count(t)));
        }
        tracing::info!(conversations = n, "restored snapshots");
        Ok(())
    }

    async fn assign(&self, consumer: &StreamConsumer, owned: &[i32]) -> Result<Progress, KafkaError> {
        let mut want = TopicPartitionList::new();
        for p in owned {
            want.add_partition(&self.topics.messages, *p);
        }
        let committed = consumer.committed_offsets(want, META_TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        let mut progress = Progress {
            position: BTreeMap::new(),
            target: BTreeMap::new(),
            live: BTreeSet::new(),
        };
        for p in owned {
            let (low, high) = consumer.fetch_watermarks(&self.topics.messages, *p, META_TIMEOUT)?;
            let start = match committed
                .find_partition(&self.topics.messages, *p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o.max(low),
                _ => low,
            };
            tpl.add_partition_offset(&self.topics.messages, *p, Offset::Offset(start))?;
            progress.position.insert(*p, start);
            progress.target.insert(*p, high);
            if start >= high {
                progress.live.insert(*p);
            }
            tracing::info!(partition = p, start, high, "assigned");
        }
        consumer.assign(&tpl)?;
        Ok(progress)
    }

    fn update_caught_up(&self, owned: &[i32], progress: &Progress) {
        let all = owned.iter().all(|p| progress.live.contains(p));
        self.caught_up.store(all, Ordering::Relaxed);
    }

    fn handle(&self, p: i32, offset: i64, payload: &[u8], progress: &Progress, tasks: &mut JoinSet<bool>) {
        let record = match decode::<ChatRecord>(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(partition = p, offset, error = %e, "skipping unreadable record");
                return;
            }
        };
        let conv_id = record.conversation_id().to_string();
        let tokens = self.tokenizer.count(content_of(&record));
        let user = match &record {
            ChatRecord::UserMessage(m) => Some(m.user_id.clone()),
            ChatRecord::AgentReply(_) | ChatRecord::EpochFence(_) => None,
        };
        let applied = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.apply(p, offset, record, tokens)
        };
        let live = progress.live.contains(&p);
        match applied {
            Applied::UserMessage { new_participant } => {
                self.metrics.messages_handled.inc();
                self.answerer.load.handled.fetch_add(1, Ordering::Relaxed);
                if new_participant
                    && live
                    && let Some(user) = user
                {
                    self.presence(p, &conv_id, &user);
                }
            }
            Applied::DuplicateReply => {
                tracing::info!(partition = p, offset, conversation = %conv_id, "dropped a duplicate reply");
            }
            Applied::Fenced => {
                tracing::info!(partition = p, offset, conversation = %conv_id, "dropped a fenced (zombie) reply");
            }
            Applied::Reply | Applied::Stale | Applied::Fence => {}
        }
        if live {
            self.maybe_answer(p, &conv_id, tasks);
        }
    }

    fn start_partition(&self, p: i32, tasks: &mut JoinSet<bool>) {
        let ids: Vec<String> = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            store
                .iter()
                .filter(|c| !c.pending.is_empty() && partition_for(&c.id, self.partitions) == p)
                .map(|c| c.id.clone())
                .collect()
        };
        for id in ids {
            self.maybe_answer(p, &id, tasks);
        }
    }

    /// Starts answering the conversation's oldest unanswered message, if none is in flight.
    fn maybe_answer(&self, p: i32, conv_id: &str, tasks: &mut JoinSet<bool>) {
        let Some(epoch) = self.ownership.epoch_of(p) else {
            return;
        };
        let job = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            let Some(conv) = store.get_mut(conv_id) else {
                return;
            };
            let Some((offset, message)) = conv.next_to_answer() else {
                return;
            };
            let message = message.clone();
            conv.in_flight = Some(message.id.clone());
            let system = (!self.system_prompt.is_empty()).then(|| Turn {
                role: Role::System,
                content: self.system_prompt.clone(),
                tokens: self.tokenizer.count(&self.system_prompt),
            });
            let context = trim_to_budget(system, &conv.turns_until(offset), self.context_tokens);
            Job {
                partition: p,
                user_offset: offset,
                message,
                context,
                epoch,
            }
        };
        tasks.spawn(self.answerer.clone().answer(job));
    }

    fn presence(&self, p: i32, conv_id: &str, user: &str) {
        let event = PresenceEvent {
            v: SCHEMA_VERSION,
            conversation_id: conv_id.to_string(),
            user_id: user.to_string(),
            kind: PresenceKind::Joined,
            timestamp: OffsetDateTime::now_utc(),
            node: self.node_id.clone(),
        };
        if let Ok(bytes) = encode(&event) {
            self.producer.send_nowait(&self.topics.users, p, conv_id, &bytes);
        }
    }

    /// Writes snapshots of changed conversations, then commits the positions they cover.
    async fn snapshot_and_commit(
        &self,
        consumer: &StreamConsumer,
        progress: &Progress,
        mode: CommitMode,
    ) -> Result<(), KafkaError> {
        let epoch_of = |id: &str| {
            self.ownership
                .epoch_of(partition_for(id, self.partitions))
                .unwrap_or(0)
        };
        let snapshots: Vec<_> = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store
                .iter_mut()
                .filter(|c| c.dirty)
                .map(|c| {
                    c.dirty = false;
                    c.to_snapshot(epoch_of(&c.id))
                })
                .collect()
        };
        let sends = snapshots.iter().map(|s| async {
            let bytes = encode(s)?;
            let p = partition_for(&s.conversation_id, self.partitions);
            self.producer
                .send(&self.topics.conversations, p, &s.conversation_id, &bytes)
                .await
        });
        let results = futures::future::join_all(sends).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            for s in &snapshots {
                if let Some(c) = store.get_mut(&s.conversation_id) {
                    c.dirty = true;
                }
            }
            return Err(e);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &progress.position {
            tpl.add_partition_offset(&self.topics.messages, *p, Offset::Offset(*o))?;
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode)?;
        }
        Ok(())
    }

    /// Publishes consumer lag per owned partition (watermark queries run off the runtime).
    fn report_lag(&self, reader: &Arc<BaseConsumer>, progress: &Progress) {
        let positions = progress.position.clone();
        let (reader, topic, metrics) = (reader.clone(), self.topics.messages.clone(), self.metrics.clone());
        tokio::task::spawn_blocking(move || {
            for (p, pos) in positions {
                if let Ok((_, high)) = reader.fetch_watermarks(&topic, p, Duration::from_secs(1)) {
                    metrics
                        .consumer_lag
                        .get_or_create(&PartitionLabel { partition: p })
                        .set((high - pos).max(0));
                }
            }
        });
    }

    async fn drain(
        &self,
        consumer: &StreamConsumer,
        progress: &Progress,
        mut tasks: JoinSet<bool>,
    ) -> Result<(), KafkaError> {
        tracing::info!(
            in_flight = tasks.len(),
            "draining: no new answers; finishing in-flight ones"
        );
        self.answerer.stop_new.cancel();
        let finished =
            tokio::time::timeout(self.grace, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "grace period over; leaving unfinished answers to the next owner"
            );
            self.answerer.abandon.cancel();
            while tasks.join_next().await.is_some() {}
        }
        self.snapshot_and_commit(consumer, progress, CommitMode::Sync)
            .await?;
        tracing::info!("owner loop drained: snapshots written, offsets committed");
        Ok(())
    }
}
