//! Applying consumed records and starting answers.

use meshchat_crds::{ChatRecord, PresenceEvent, PresenceKind, SCHEMA_VERSION, decode, encode, partition_for};
use time::OffsetDateTime;

use super::{OwnerLoop, Run, State};
use crate::answer::Job;
use crate::context::{Role, Turn, trim_to_budget};
use crate::held::Phase;
use crate::store::{Applied, content_of};

// === impl OwnerLoop ===

impl OwnerLoop {
    /// A record consumed from a held partition.
    pub(super) fn on_record(&self, p: i32, offset: i64, payload: Option<&[u8]>, run: &mut Run) {
        let Some(part) = run.parts.get_mut(&p) else { return };
        if !matches!(part.state, State::Replaying { .. } | State::Live) {
            return;
        }
        if part.position.is_some_and(|pos| offset < pos) {
            return; // redelivered after a reassignment
        }
        part.position = Some(offset + 1);
        let live = matches!(part.state, State::Live);
        if let Some(payload) = payload {
            self.handle(p, offset, payload, live, run);
        }
        let Some(part) = run.parts.get_mut(&p) else { return };
        if let State::Replaying { start, target, since } = part.state
            && offset + 1 >= target
        {
            part.state = State::Live;
            self.held.set(p, part.epoch, Phase::Live);
            let epoch = part.epoch;
            self.went_live(p, epoch, since, u64::try_from(target - start).unwrap_or(0));
            self.start_partition(p, run);
            self.update_caught_up(run);
        }
    }

    fn handle(&self, p: i32, offset: i64, payload: &[u8], live: bool, run: &mut Run) {
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
        match applied {
            Applied::UserMessage { new_participant } => {
                self.metrics.messages_handled.inc();
                self.stats.message(p);
                self.answerer
                    .load
                    .handled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            Applied::Fence => {
                let fence = self.store.read().unwrap_or_else(|p| p.into_inner()).fence(p);
                self.fenced_out(p, fence, run);
                return;
            }
            Applied::Reply | Applied::Stale => {}
        }
        if live && !conv_id.is_empty() {
            self.maybe_answer(p, &conv_id, run);
        }
    }

    /// Starts answering every conversation of `p` with unanswered messages.
    pub(super) fn start_partition(&self, p: i32, run: &mut Run) {
        let ids: Vec<String> = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            store
                .iter()
                .filter(|c| !c.pending.is_empty() && partition_for(&c.id, self.partitions) == p)
                .map(|c| c.id.clone())
                .collect()
        };
        for id in ids {
            self.maybe_answer(p, &id, run);
        }
    }

    /// Starts answering the conversation's oldest unanswered message, if none is in flight.
    fn maybe_answer(&self, p: i32, conv_id: &str, run: &mut Run) {
        let Some(part) = run.parts.get(&p) else { return };
        if !matches!(part.state, State::Live) {
            return;
        }
        let (epoch, cancel) = (part.epoch, part.cancel.child_token());
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
                cancel,
            }
        };
        run.tasks.spawn(self.answerer.clone().answer(job));
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
}
