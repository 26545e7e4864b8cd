//! Answers one user message: waits for an LLM slot, streams the reply's tokens to
//! `chat.stream`, and writes the final reply (or an explicit error reply) to `chat.messages`,
//! only while this worker may still write for the partition.

use std::sync::Arc;
use std::time::Duration;

use meshchat_wire::kafka::KafkaError;
use meshchat_wire::{
    AgentReply, ChatRecord, ReplyChunk, ReplyError, ReplyErrorKind, SCHEMA_VERSION, UserMessage, encode,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::context::Turn;
use crate::limits::Limits;
use crate::llm::{Llm, LlmError};
use crate::load::Load;
use crate::log::Log;
use crate::metrics::{KindLabel, Metrics, OutcomeLabel};
use crate::owner::landed::{Landed, Unanswered, landed};
use crate::ownership::{Epoch, HeartbeatLease, Held, Partition, Phase};
use crate::telemetry;
use crate::tokenizer::Tokenizer;

/// One message to answer.
#[derive(Debug)]
pub struct Job {
    /// Partition of the conversation.
    pub partition: Partition,
    /// Offset of the user message.
    pub user_offset: i64,
    /// The message.
    pub message: UserMessage,
    /// Trimmed context, system prompt first, the message last.
    pub context: Vec<Turn>,
    /// Ownership epoch the answer is produced under.
    pub epoch: Epoch,
    /// Cancelled when the partition's release grace ends.
    pub cancel: CancellationToken,
    /// Cancelled by a cancel request: the reply is written with the text so far, marked
    /// cancelled (already cancelled: an empty cancelled reply).
    pub stop: CancellationToken,
    /// Set when the message is not to be answered (a conversation limit): the error reply.
    pub refusal: Option<LlmError>,
    /// The trace the message came with (tracing on): the answer continues it.
    pub trace: Option<opentelemetry::Context>,
}

/// Who answers: the worker's id and the replies' sender name.
#[derive(Clone, Debug)]
pub struct AnswerSettings {
    /// This worker.
    pub node_id: String,
    /// Sender of replies.
    pub agent_name: String,
}

/// Everything an answer needs; shared by all answer tasks.
pub struct Answerer {
    settings: AnswerSettings,
    llm: Llm,
    log: Arc<Log>,
    slots: Semaphore,
    load: Arc<Load>,
    metrics: Metrics,
    tokenizer: Tokenizer,
    /// Set on shutdown: answers not yet started are left for the next owner.
    stop_new: CancellationToken,
    /// Set when the shutdown grace ends: in-flight answers are abandoned, unanswered.
    abandon: CancellationToken,
    held: Held,
    lease: Arc<HeartbeatLease>,
    /// Tenants' LLM token quotas.
    limits: Arc<Limits>,
}

// === impl Answerer ===

impl Answerer {
    /// An answerer with `concurrency` LLM slots.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: AnswerSettings,
        llm: Llm,
        concurrency: u32,
        log: Arc<Log>,
        load: Arc<Load>,
        metrics: Metrics,
        tokenizer: Tokenizer,
        held: Held,
        lease: Arc<HeartbeatLease>,
        limits: Arc<Limits>,
    ) -> Self {
        Self {
            settings,
            llm,
            log,
            slots: Semaphore::new(concurrency as usize),
            load,
            metrics,
            tokenizer,
            stop_new: CancellationToken::new(),
            abandon: CancellationToken::new(),
            held,
            lease,
            limits,
        }
    }

    /// Shutdown: answers not started yet are left for the next owner.
    pub fn stop_new(&self) {
        self.stop_new.cancel();
    }

    /// The shutdown grace ended: in-flight answers are abandoned.
    pub fn abandon(&self) {
        self.abandon.cancel();
    }

    /// Answers `job`. Returns whether a reply was written.
    pub async fn answer(&self, mut job: Job) -> bool {
        let span = telemetry::process_span(
            &self.log.topics().messages,
            job.partition,
            job.user_offset,
            telemetry::Step::Answer,
        );
        telemetry::adopt(&span, job.trace.take());
        self.answer_traced(job).instrument(span).await
    }

    async fn answer_traced(&self, job: Job) -> bool {
        let quota = match job.refusal.clone() {
            Some(refusal) => Err(refusal),
            None if job.stop.is_cancelled() => Ok(()),
            None => match self.await_quota(&job).await {
                Some(quota) => quota,
                None => return false,
            },
        };
        // only a call to the LLM takes one of its slots; a cancelled answer needs none
        let permit = match quota {
            Err(_) => None,
            Ok(()) if job.stop.is_cancelled() => None,
            Ok(()) => {
                let _queued = self.load.queued();
                tokio::select! {
                    p = self.slots.acquire() => match p { Ok(p) => Some(p), Err(_) => return false },
                    () = self.stop_new.cancelled() => return false,
                    () = job.cancel.cancelled() => return false,
                    () = job.stop.cancelled() => None,
                }
            }
        };
        // a partition being handed away starts nothing new
        if self
            .held
            .get(job.partition)
            .is_none_or(|h| h.epoch != job.epoch || h.phase != Phase::Live)
        {
            return false;
        }
        let _running = self.load.running();
        let reply_id = format!("rep-{}", uuid::Uuid::now_v7().simple());
        let prompt_tokens: u32 = job.context.iter().map(|t| t.tokens).sum();
        let started = std::time::Instant::now();
        let mut seq = 0u32;
        let mut current_attempt = 0u32;
        // the current attempt's text, for a cancelled reply
        let mut so_far = String::new();
        let outcome = {
            let on_delta = |attempt: u32, delta: &str| {
                if attempt != current_attempt {
                    current_attempt = attempt;
                    seq = 0;
                    so_far.clear();
                }
                self.send_chunk(&job, &reply_id, attempt, seq, delta);
                so_far.push_str(delta);
                seq += 1;
            };
            match quota {
                Err(e) => Some(Err(e)),
                Ok(()) if permit.is_none() => None,
                Ok(()) => {
                    self.limits
                        .charge_tokens(&job.message.tenant, u64::from(prompt_tokens));
                    // a cancel drops the LLM's stream (its connection) at once
                    let conversation = job.message.conversation_id.as_str();
                    tokio::select! {
                        r = self.llm.stream(&job.context, conversation, on_delta) => Some(r),
                        () = self.abandon.cancelled() => return false,
                        () = job.cancel.cancelled() => return false,
                        () = job.stop.cancelled() => None,
                    }
                }
            }
        };
        drop(permit);
        self.metrics.llm_latency.observe(started.elapsed().as_secs_f64());
        let now = OffsetDateTime::now_utc();
        let cancelled = outcome.is_none();
        let (content, error, attempt) = match outcome {
            None => {
                tracing::info!(message_id = %job.message.id, chars = so_far.len(), "reply cancelled on request");
                (std::mem::take(&mut so_far), None, current_attempt)
            }
            Some(Ok(c)) => (c.content, None, c.attempt),
            Some(Err(e)) => {
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
        self.limits
            .charge_tokens(&job.message.tenant, u64::from(completion_tokens));
        let reply = ChatRecord::AgentReply(AgentReply {
            v: SCHEMA_VERSION,
            id: reply_id,
            conversation_id: job.message.conversation_id.clone(),
            tenant: job.message.tenant.clone(),
            in_reply_to: job.message.id.clone(),
            sender: self.settings.agent_name.clone(),
            content,
            timestamp: now,
            node: self.settings.node_id.clone(),
            epoch: job.epoch,
            error: error.clone(),
            completion_tokens,
            attempt,
            chunks,
            cancelled,
        });
        // produce only while this worker may still write for the partition at the job's epoch
        // (not abandoned, not fenced), and holds its lease (it may have been declared dead
        // while paused)
        if !self.held.may_write(job.partition, job.epoch) || !self.lease.holds_now() {
            return false;
        }
        let (reply, error) = match self.write_reply(&job, &reply).await {
            Written::Yes => (reply, error),
            Written::No => return false,
            Written::Refused(e) => {
                // the same bytes can never be written: an error reply instead, small enough to
                // be, so the conversation's next message is answered
                tracing::error!(message_id = %job.message.id, error = %e, "the reply could not be stored; writing an error reply instead");
                let ChatRecord::AgentReply(mut failed) = reply else {
                    return false;
                };
                failed.content = String::new();
                failed.completion_tokens = 0;
                failed.error = Some(ReplyError {
                    kind: ReplyErrorKind::NotStored,
                    message: not_stored_reason(&e).into(),
                    attempts: attempt + 1,
                });
                let error = failed.error.clone();
                let failed = ChatRecord::AgentReply(failed);
                if !matches!(self.write_reply(&job, &failed).await, Written::Yes) {
                    return false;
                }
                (failed, error)
            }
        };
        let completion_tokens = match &reply {
            ChatRecord::AgentReply(r) => r.completion_tokens,
            _ => 0,
        };
        self.load.tokens(job.partition, u64::from(completion_tokens));
        let outcome = if error.is_some() { "error" } else { "ok" };
        if let Some(e) = &error {
            tracing::Span::current()
                .record("otel.status_code", "ERROR")
                .record("otel.status_description", e.message.as_str());
        }
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

    /// Waits for the tenant's token quota: `Err` when it would take longer than allowed (the
    /// answer becomes an error reply saying so), `None` when the answer is called off.
    async fn await_quota(&self, job: &Job) -> Option<Result<(), LlmError>> {
        let wait = self.limits.token_wait(&job.message.tenant);
        if wait.is_zero() {
            return Some(Ok(()));
        }
        if wait > self.limits.settings().quota_wait {
            let secs = wait.as_secs() + 1;
            let message =
                format!("The LLM token quota of this organisation is used up; try again in {secs}s");
            tracing::info!(tenant = %job.message.tenant, message_id = %job.message.id, wait_secs = secs, "token quota used up; answering with an error reply");
            return Some(Err(LlmError {
                kind: ReplyErrorKind::Quota,
                detail: message.clone(),
                message,
                attempts: 0,
            }));
        }
        let _queued = self.load.queued();
        tokio::select! {
            () = tokio::time::sleep(wait) => Some(Ok(())),
            () = self.stop_new.cancelled() => None,
            () = job.cancel.cancelled() => None,
        }
    }

    fn send_chunk(&self, job: &Job, reply_id: &str, attempt: u32, seq: u32, delta: &str) {
        let chunk = ReplyChunk {
            v: SCHEMA_VERSION,
            conversation_id: job.message.conversation_id.clone(),
            tenant: job.message.tenant.clone(),
            in_reply_to: job.message.id.clone(),
            user_offset: job.user_offset,
            reply_id: reply_id.to_string(),
            attempt,
            seq,
            delta: delta.to_string(),
            node: self.settings.node_id.clone(),
            epoch: job.epoch,
        };
        match encode(&chunk) {
            Ok(bytes) => self.log.producer().send_nowait(
                &self.log.topics().stream,
                job.partition,
                &chunk.key(),
                &bytes,
            ),
            Err(e) => tracing::warn!(error = %e, "could not encode chunk"),
        }
    }

    /// Writes the reply, retrying until the broker acknowledges it or the grace period ends;
    /// an error no retry can mend (the record is too large, say) is handed back.
    async fn write_reply(&self, job: &Job, reply: &ChatRecord) -> Written {
        let bytes = match encode(reply) {
            Ok(b) => b,
            Err(e) => return Written::Refused(e.into()),
        };
        let key = job.message.key();
        let reply_id = match reply {
            ChatRecord::AgentReply(r) => r.id.as_str(),
            _ => "",
        };
        // the reply carries the trace on to its live deliveries
        let span = telemetry::send_span(&self.log.topics().messages, job.partition);
        let headers = telemetry::record_headers(&span);
        let mut delays = crate::retry::forever(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let send = self
                .log
                .producer()
                .send_with(
                    &self.log.topics().messages,
                    job.partition,
                    &key,
                    &bytes,
                    headers.clone(),
                )
                .instrument(span.clone());
            tokio::select! {
                // a failed attempt is logged (an event of the answer's span); the write is retried
                r = send => match r.inspect(|offset| { span.record("messaging.kafka.offset", offset); }) {
                    Ok(offset) => {
                        self.log.note_own_message(job.partition, offset);
                        return Written::Yes;
                    }
                    Err(e) if e.is_permanent() => return Written::Refused(e),
                    Err(e) if e.may_have_landed() => {
                        tracing::warn!(error = %e, "reply not acknowledged; reading the log before writing it again");
                        let unanswered = Unanswered {
                            partition: job.partition,
                            from: job.user_offset + 1,
                            key: &key,
                            reply_id,
                        };
                        match landed(&self.log, &unanswered, &self.abandon, &job.cancel).await {
                            Landed::At(offset) => {
                                tracing::info!(partition = job.partition, offset, "the unacknowledged reply had been stored");
                                self.log.note_own_message(job.partition, offset);
                                return Written::Yes;
                            }
                            Landed::No => {}
                            Landed::CalledOff => return Written::No,
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reply not written; retrying"),
                },
                () = self.abandon.cancelled() => return Written::No,
                () = job.cancel.cancelled() => return Written::No,
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.abandon.cancelled() => return Written::No,
                () = job.cancel.cancelled() => return Written::No,
            }
        }
    }
}

/// What became of a reply.
enum Written {
    Yes,
    /// Not written: the partition went away or the grace period ended.
    No,
    /// Can never be written as it is.
    Refused(KafkaError),
}

/// The reason shown to chat users for a reply that could not be stored.
fn not_stored_reason(e: &KafkaError) -> &'static str {
    use rdkafka::error::RDKafkaErrorCode as C;
    match e {
        KafkaError::Client(c)
            if matches!(
                c.rdkafka_error_code(),
                Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge)
            ) =>
        {
            "The answer was too large to store"
        }
        _ => "The answer could not be stored",
    }
}
