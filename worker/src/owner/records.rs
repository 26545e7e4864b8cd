//! Applying consumed records to the conversations, and starting answers.

use std::collections::VecDeque;

use meshchat_wire::kafka::{KafkaError, read_one};
use meshchat_wire::{
    ChatRecord, ConversationSnapshot, PresenceEvent, PresenceKind, RefusedWhy, ReplyErrorKind,
    SCHEMA_VERSION, decode, split_key,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{Consumed, Owner, Run};
use crate::context::{Role, Turn, trim_to_budget};
use crate::llm::LlmError;
use crate::owner::answer::Job;
use crate::ownership::{Epoch, Event, Partition};
use crate::store::{Applied, Conversation, content_of};

// === impl Owner ===

impl Owner {
    /// A record of `p`; with `answer_at` the partition is live and answers start.
    pub(super) fn apply(
        &self,
        p: Partition,
        consumed: &Consumed<'_>,
        answer_at: Option<Epoch>,
        run: &mut Run,
        then: &mut VecDeque<Event>,
    ) -> Result<(), KafkaError> {
        let offset = consumed.offset;
        let record = match decode::<ChatRecord>(consumed.payload.unwrap_or_default()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(partition = p, offset, error = %e, "skipping unreadable record");
                return Ok(());
            }
        };
        // fences have their own key and belong to no conversation
        let key = match record {
            ChatRecord::EpochFence(_) => String::new(),
            _ => record.key(),
        };
        let evicted = self.store.read().unwrap_or_else(|p| p.into_inner()).evicted(&key);
        if let Some((_, snapshot_offset)) = evicted {
            self.bring_back(p, &key, snapshot_offset, run)?;
        }
        let tokens = self.tokenizer.count(content_of(&record));
        if let (ChatRecord::UserMessage(_), Some(cx)) = (&record, &consumed.trace) {
            run.traces.insert(p, offset, cx.clone());
        }
        let user = match &record {
            ChatRecord::UserMessage(m) => Some(m.user_id.clone()),
            ChatRecord::ParticipantAdded(p) => Some(p.user_id.clone()),
            ChatRecord::AgentReply(_)
            | ChatRecord::EpochFence(_)
            | ChatRecord::CancelRequest(_)
            | ChatRecord::ConversationDeleted(_) => None,
        };
        let applied = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.apply(p, offset, record, tokens)
        };
        match applied {
            Applied::UserMessage {
                new_participant,
                refused,
                interrupts,
            } => {
                self.metrics.messages_handled.inc();
                self.load.message(p);
                for target in interrupts {
                    self.stop_reply(p, offset, &key, target, answer_at, run, then);
                }
                if let (Some(why), Some(epoch)) = (refused, answer_at) {
                    self.refuse(p, epoch, &key, offset, why, run, then);
                }
                if new_participant
                    && answer_at.is_some()
                    && let Some(user) = user
                {
                    self.joined(&key, &user);
                }
            }
            Applied::DuplicateReply => {
                tracing::info!(partition = p, offset, conversation = %key, "dropped a duplicate reply");
            }
            Applied::DuplicateMessage => {
                tracing::info!(partition = p, offset, conversation = %key, "dropped a retried message (its idempotency key was used before)");
            }
            Applied::Fenced => {
                tracing::info!(partition = p, offset, conversation = %key, "dropped a fenced (zombie) reply");
            }
            Applied::Fence => {
                let epoch = self.store.read().unwrap_or_else(|p| p.into_inner()).fence(p);
                then.push_back(Event::FenceRead { partition: p, epoch });
                return Ok(());
            }
            Applied::Participant { new_participant } => {
                if new_participant
                    && answer_at.is_some()
                    && let Some(user) = user
                {
                    self.joined(&key, &user);
                }
            }
            Applied::Cancel { target } => match target {
                Some(target) => self.stop_reply(p, offset, &key, target, answer_at, run, then),
                None => {
                    tracing::debug!(partition = p, offset, conversation = %key, "cancel requested with no reply under way");
                }
            },
            Applied::Reply => {
                run.stops.remove(&key);
            }
            Applied::Deleted => {
                // an answer under way stops; its reply, if written, finds no message to answer
                if let Some(stop) = run.stops.remove(&key) {
                    stop.cancel();
                }
                tracing::info!(partition = p, offset, conversation = %key, "conversation deleted");
                return Ok(());
            }
            Applied::Stale => {}
        }
        if let Some(epoch) = answer_at
            && !key.is_empty()
        {
            self.answer_next(p, epoch, &key, run, then);
        }
        Ok(())
    }

    /// Brings an evicted conversation back before a record of it is applied: its last
    /// snapshot, fetched by offset (the log after it holds nothing of it: it was evicted clean),
    /// or, if that record is gone, the conversation rebuilt from the log.
    fn bring_back(
        &self,
        p: Partition,
        key: &str,
        snapshot_offset: i64,
        run: &mut Run,
    ) -> Result<(), KafkaError> {
        let topics = self.log.topics();
        let began = std::time::Instant::now();
        let raw = tokio::task::block_in_place(|| {
            let r = run.readers.take()?;
            let raw = read_one(&r, &topics.conversations, p, snapshot_offset);
            run.readers.give_after(r, &raw);
            raw
        })?;
        let snapshot = raw
            .filter(|raw| raw.key.as_deref() == Some(key.as_bytes()))
            .and_then(|raw| raw.payload)
            .and_then(|payload| decode::<ConversationSnapshot>(&payload).ok());
        let conv = match snapshot {
            Some(s) => {
                let mut conv = Conversation::from_snapshot(s, |t| self.tokenizer.count(t));
                conv.snapshot_offset = Some(snapshot_offset);
                conv
            }
            None => {
                tracing::info!(conversation = %key, "an evicted conversation's snapshot is gone; reading the log");
                let keep = self.store.read().unwrap_or_else(|p| p.into_inner()).keep;
                let read = tokio::task::block_in_place(|| {
                    self.log.read_conversation(key, keep, |t| self.tokenizer.count(t))
                })?;
                read.unwrap_or_else(|| Conversation::new(key))
            }
        };
        tracing::debug!(conversation = %key, took_ms = began.elapsed().as_millis() as u64, "an evicted conversation is back");
        self.store
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .restore(conv);
        Ok(())
    }

    /// Starts answering every conversation of `p` with unanswered messages.
    pub(super) fn start_answers(
        &self,
        p: Partition,
        epoch: Epoch,
        run: &mut Run,
        then: &mut VecDeque<Event>,
    ) {
        let ids: Vec<String> = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let partitions = self.log.partitions();
            store
                .iter()
                .filter(|c| !c.pending.is_empty() && meshchat_wire::partition_for(&c.key, partitions) == p)
                .map(|c| c.key.clone())
                .collect()
        };
        for id in ids {
            let refused: Vec<(i64, RefusedWhy)> = {
                let store = self.store.read().unwrap_or_else(|p| p.into_inner());
                store
                    .get(&id)
                    .map(|c| c.refused_pending().map(|(o, _, why)| (o, why)).collect())
                    .unwrap_or_default()
            };
            for (offset, why) in refused {
                self.refuse(p, epoch, &id, offset, why, run, then);
            }
            self.answer_next(p, epoch, &id, run, then);
        }
    }

    /// Stops the reply to the message at `target.0` (a cancel request, or a newer message with
    /// `interrupt`): the answer in flight (`target.1`) is stopped and writes its text so far; one
    /// not begun gets an empty cancelled reply now, if the partition is live here.
    #[allow(clippy::too_many_arguments)]
    fn stop_reply(
        &self,
        p: Partition,
        offset: i64,
        key: &str,
        target: (i64, bool),
        answer_at: Option<Epoch>,
        run: &mut Run,
        then: &mut VecDeque<Event>,
    ) {
        match target {
            (_, true) => {
                tracing::info!(partition = p, offset, conversation = %key, "stopping the reply being generated");
                if let Some(stop) = run.stops.remove(key) {
                    stop.cancel();
                }
            }
            (at, false) => {
                if let Some(epoch) = answer_at {
                    self.refuse(p, epoch, key, at, RefusedWhy::Cancelled, run, then);
                }
            }
        }
    }

    /// Writes the error reply of a message a conversation limit refused (at once: it waits
    /// for no answer before it).
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        p: Partition,
        epoch: Epoch,
        key: &str,
        offset: i64,
        why: RefusedWhy,
        run: &mut Run,
        then: &mut VecDeque<Event>,
    ) {
        let message = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let Some(m) = store.get(key).and_then(|c| c.pending.get(&offset)) else {
                return;
            };
            m.clone()
        };
        let keep = self.store.read().unwrap_or_else(|p| p.into_inner()).keep;
        let text = match why {
            RefusedWhy::Cancelled => String::new(),
            RefusedWhy::Pending => format!(
                "Too many messages are waiting for an answer in this conversation (at most {}); this one was not answered",
                keep.pending
            ),
            RefusedWhy::Participants => format!(
                "This conversation has as many participants as it may have ({}); this message was not answered",
                keep.participants
            ),
        };
        // a reply cancelled before it began is an empty reply marked cancelled, not an error
        let stop = CancellationToken::new();
        let refusal = if why == RefusedWhy::Cancelled {
            tracing::info!(partition = p, offset, conversation = %key, "cancel requested before the reply began");
            stop.cancel();
            None
        } else {
            tracing::info!(partition = p, offset, conversation = %key, ?why, "a conversation limit refuses a message an answer");
            Some(LlmError {
                kind: ReplyErrorKind::Limit,
                detail: text.clone(),
                message: text,
                attempts: 0,
            })
        };
        let job = Job {
            partition: p,
            user_offset: offset,
            message,
            context: Vec::new(),
            epoch,
            cancel: run.cancels.entry(p).or_default().child_token(),
            stop,
            refusal,
            trace: run.traces.take(p, offset),
        };
        let answerer = self.answerer.clone();
        let task = run.answers.spawn(async move {
            answerer.answer(job).await;
        });
        run.answering.insert(task.id(), (p, epoch));
        then.push_back(Event::AnswerStarted { partition: p, epoch });
    }

    /// Starts answering the conversation's oldest unanswered message, if none is in flight.
    fn answer_next(&self, p: Partition, epoch: Epoch, key: &str, run: &mut Run, then: &mut VecDeque<Event>) {
        let job = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            let Some(conv) = store.get_mut(key) else {
                return;
            };
            let Some((offset, message)) = conv.next_to_answer() else {
                return;
            };
            let message = message.clone();
            conv.in_flight = Some(message.id.clone());
            let system = (!self.settings.system_prompt.is_empty()).then(|| Turn {
                role: Role::System,
                content: self.settings.system_prompt.clone(),
                tokens: self.tokenizer.count(&self.settings.system_prompt),
            });
            let context = trim_to_budget(system, &conv.turns_until(offset), self.settings.context_tokens);
            let stop = CancellationToken::new();
            run.stops.insert(key.to_string(), stop.clone());
            Job {
                partition: p,
                user_offset: offset,
                message,
                context,
                epoch,
                cancel: run.cancels.entry(p).or_default().child_token(),
                stop,
                refusal: None,
                trace: run.traces.take(p, offset),
            }
        };
        let answerer = self.answerer.clone();
        let task = run.answers.spawn(async move {
            answerer.answer(job).await;
        });
        run.answering.insert(task.id(), (p, epoch));
        then.push_back(Event::AnswerStarted { partition: p, epoch });
    }

    /// A user's first message in the conversation of key `key`.
    fn joined(&self, key: &str, user: &str) {
        let (tenant, id) = split_key(key);
        self.log.publish_presence(&PresenceEvent {
            v: SCHEMA_VERSION,
            conversation_id: id.to_string(),
            tenant: tenant.to_string(),
            user_id: user.to_string(),
            kind: PresenceKind::Joined,
            timestamp: OffsetDateTime::now_utc(),
            node: self.settings.node_id.clone(),
        });
    }
}
