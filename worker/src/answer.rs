//! Answers one user message: waits for an LLM slot, streams the reply's tokens to
//! `chat.stream`, and writes the final reply (or an explicit error reply) to `chat.messages`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshchat_crds::{
    AgentReply, ChatRecord, ReplyChunk, ReplyError, SCHEMA_VERSION, Topics, UserMessage, encode,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::context::Turn;
use crate::held::{Held, Phase};
use crate::kafka::Producer;
use crate::llm::Llm;
use crate::load::Load;
use crate::mesh::PartitionStats;
use crate::metrics::{KindLabel, Metrics, OutcomeLabel};

/// One message to answer.
#[derive(Debug)]
pub struct Job {
    /// Partition of the conversation.
    pub partition: i32,
    /// Offset of the user message.
    pub user_offset: i64,
    /// The message.
    pub message: UserMessage,
    /// Trimmed context, system prompt first, the message last.
    pub context: Vec<Turn>,
    /// Ownership epoch the answer is produced under.
    pub epoch: u64,
    /// Cancelled when the partition's release grace ends.
    pub cancel: CancellationToken,
}

/// Everything an answer needs; shared by all answer tasks.
pub struct Answerer {
    /// LLM client.
    pub llm: Llm,
    /// Producer.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// This worker.
    pub node_id: String,
    /// Agent name on replies.
    pub agent_name: String,
    /// LLM concurrency limit.
    pub slots: Arc<Semaphore>,
    /// Load counters.
    pub load: Arc<Load>,
    /// Metrics.
    pub metrics: Metrics,
    /// Counts completion tokens.
    pub tokenizer: crate::tokenizer::Tokenizer,
    /// Set on shutdown: answers not yet started are left for the next owner.
    pub stop_new: CancellationToken,
    /// Set when the shutdown grace ends: in-flight answers are abandoned, unanswered.
    pub abandon: CancellationToken,
    /// What this worker holds: answers are produced only while it holds the partition.
    pub held: Arc<Held>,
    /// This worker's heartbeat lease.
    pub lease: Arc<crate::lease::Lease>,
    /// Per-partition counters.
    pub stats: Arc<PartitionStats>,
}

/// Counts a job as in flight for its partition until dropped.
struct PartitionJob<'a> {
    stats: &'a PartitionStats,
    partition: i32,
}

impl<'a> PartitionJob<'a> {
    fn new(stats: &'a PartitionStats, partition: i32) -> Self {
        stats.in_flight(partition, 1);
        Self { stats, partition }
    }
}

impl Drop for PartitionJob<'_> {
    fn drop(&mut self) {
        self.stats.in_flight(self.partition, -1);
    }
}

/// Decrements a gauge and counter pair when dropped.
struct Track<'a> {
    counter: &'a std::sync::atomic::AtomicU32,
    gauge: &'a prometheus_client::metrics::gauge::Gauge,
}

impl<'a> Track<'a> {
    fn new(
        counter: &'a std::sync::atomic::AtomicU32,
        gauge: &'a prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Self { counter, gauge }
    }
}

impl Drop for Track<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

// === impl Answerer ===

impl Answerer {
    /// Answers `job`. Returns whether a reply was written (false only on shutdown).
    pub async fn answer(self: Arc<Self>, job: Job) -> bool {
        let _job = PartitionJob::new(&self.stats, job.partition);
        let permit = {
            let _queued = Track::new(&self.load.queued, &self.metrics.llm_queued);
            tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return false },
                () = self.stop_new.cancelled() => return false,
                () = job.cancel.cancelled() => return false,
            }
        };
        // a partition being handed away starts nothing new
        if self.held.get(job.partition) != Some((job.epoch, Phase::Live)) {
            return false;
        }
        let _in_flight = Track::new(&self.load.in_flight, &self.metrics.llm_in_flight);
        let reply_id = format!("rep-{}", uuid::Uuid::now_v7().simple());
        let prompt_tokens: u32 = job.context.iter().map(|t| t.tokens).sum();
        let started = std::time::Instant::now();
        let mut seq = 0u32;
        let mut current_attempt = 0u32;
        let outcome = {
            let on_delta = |attempt: u32, delta: &str| {
                if attempt != current_attempt {
                    current_attempt = attempt;
                    seq = 0;
                }
                self.send_chunk(&job, &reply_id, attempt, seq, delta);
                seq += 1;
            };
            tokio::select! {
                r = self.llm.stream(&job.context, on_delta) => r,
                () = self.abandon.cancelled() => return false,
                () = job.cancel.cancelled() => return false,
            }
        };
        drop(permit);
        self.metrics.llm_latency.observe(started.elapsed().as_secs_f64());
        let now = OffsetDateTime::now_utc();
        let (content, error, attempt) = match outcome {
            Ok(c) => (c.content, None, c.attempt),
            Err(e) => {
                self.metrics.llm_failures.inc_by(u64::from(e.attempts));
                tracing::warn!(message_id = %job.message.id, error = %e, "answering with an error reply");
                let attempt = e.attempts.saturating_sub(1);
                (
                    String::new(),
                    Some(ReplyError {
                        kind: e.kind,
                        message: e.message,
                        attempts: e.attempts,
                    }),
                    attempt,
                )
            }
        };
        let chunks = if attempt == current_attempt { seq } else { 0 };
        let completion_tokens = self.tokenizer.count(&content);
        let reply = ChatRecord::AgentReply(AgentReply {
            v: SCHEMA_VERSION,
            id: reply_id,
            conversation_id: job.message.conversation_id.clone(),
            in_reply_to: job.message.id.clone(),
            sender: self.agent_name.clone(),
            content,
            timestamp: now,
            node: self.node_id.clone(),
            epoch: job.epoch,
            error: error.clone(),
            completion_tokens,
            attempt,
            chunks,
        });
        // produce only while this worker still holds the partition at the job's epoch, and
        // its lease (it may have been declared dead while paused)
        if !self.held.holds_at(job.partition, job.epoch)
            || !self.lease.holds_now()
            || !self.write_reply(&job, &reply).await
        {
            return false;
        }
        self.stats.tokens(job.partition, u64::from(completion_tokens));
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.metrics
            .replies
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.metrics
            .llm_tokens
            .get_or_create(&KindLabel { kind: "prompt" })
            .inc_by(u64::from(prompt_tokens));
        self.metrics
            .llm_tokens
            .get_or_create(&KindLabel { kind: "completion" })
            .inc_by(u64::from(completion_tokens));
        let accepted = job.message.accepted_at.unwrap_or(job.message.timestamp);
        let waited = (now - accepted).as_seconds_f64().max(0.0);
        self.metrics.send_to_reply.observe(waited);
        true
    }

    fn send_chunk(&self, job: &Job, reply_id: &str, attempt: u32, seq: u32, delta: &str) {
        let chunk = ReplyChunk {
            v: SCHEMA_VERSION,
            conversation_id: job.message.conversation_id.clone(),
            in_reply_to: job.message.id.clone(),
            user_offset: job.user_offset,
            reply_id: reply_id.to_string(),
            attempt,
            seq,
            delta: delta.to_string(),
            node: self.node_id.clone(),
            epoch: job.epoch,
        };
        match encode(&chunk) {
            Ok(bytes) => {
                self.producer
                    .send_nowait(&self.topics.stream, job.partition, &chunk.conversation_id, &bytes)
            }
            Err(e) => tracing::warn!(error = %e, "could not encode chunk"),
        }
    }

    /// Writes the reply, retrying until the broker acknowledges it or the grace period ends.
    async fn write_reply(&self, job: &Job, reply: &ChatRecord) -> bool {
        let bytes = match encode(reply) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "could not encode reply");
                return false;
            }
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let send = self.producer.send(
                &self.topics.messages,
                job.partition,
                &job.message.conversation_id,
                &bytes,
            );
            tokio::select! {
                r = send => match r {
                    Ok(_) => return true,
                    Err(e) => tracing::warn!(error = %e, "reply not acknowledged; retrying"),
                },
                () = self.abandon.cancelled() => return false,
                () = job.cancel.cancelled() => return false,
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.abandon.cancelled() => return false,
                () = job.cancel.cancelled() => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
