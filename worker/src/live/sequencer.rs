//! Orders one conversation's live events. User messages and final replies come from
//! `chat.messages`, token chunks from `chat.stream`; a reader sees the two topics interleaved
//! arbitrarily. The sequencer emits, per conversation: the user message, then its tokens in
//! order, then the final reply — holding chunks that arrive before their message and a final
//! reply that arrives before its chunks (bounded by `hold`). Pure; time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use meshchat_wire::{AgentReply, ChatRecord, KEYED_ID_PREFIX, ReplyChunk};

use super::cursor::{Pos, Positioned, Topic};
use crate::ownership::{Epoch, Verdict, verdict, void};
use crate::view::{LiveEvent, MessageView};

const FINISHED_MEMORY: usize = 128;

/// How far a reply's tokens have been shown: its generation — the owner's epoch and the LLM
/// attempt; a new owner (after a move or a failover) or a retry starts the text again — and
/// the next chunk number.
#[derive(Debug, Default)]
struct Progress {
    generation: (u64, u32),
    next_seq: u32,
}

/// Live ordering state of one conversation.
#[derive(Debug)]
pub struct Sequencer {
    hold: Duration,
    /// Chunks (and their `chat.stream` offsets) whose user message has not been read yet.
    held_chunks: Vec<(i64, ReplyChunk)>,
    replies: HashMap<String, Progress>,
    /// Reply ids and answered message ids recently finished (the first reply wins).
    finished: VecDeque<String>,
    /// A final reply waiting for its chunks, and what came after it.
    blocked: Option<(Instant, VecDeque<(i64, ChatRecord)>)>,
    /// Ids of messages sent with an idempotency key recently shown: a retry's record is not
    /// shown again.
    keyed: VecDeque<String>,
}

// === impl Sequencer ===

impl Sequencer {
    /// A sequencer that waits at most `hold` for a final reply's missing chunks.
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            held_chunks: Vec::new(),
            replies: HashMap::new(),
            finished: VecDeque::new(),
            blocked: None,
            keyed: VecDeque::new(),
        }
    }

    /// A record of `chat.messages` at `offset`, read where its partition's latest fence is
    /// `fence`. A void or duplicate reply is never shown.
    pub fn on_message(
        &mut self,
        offset: i64,
        record: ChatRecord,
        fence: Epoch,
        now: Instant,
    ) -> Vec<Positioned> {
        let mut out = Vec::new();
        if let ChatRecord::AgentReply(r) = &record
            && verdict(fence, r.epoch, &r.in_reply_to, |id| self.answered(id)) != Verdict::Counts
        {
            return out;
        }
        if let ChatRecord::UserMessage(m) = &record
            && m.id.starts_with(KEYED_ID_PREFIX)
        {
            if self.keyed.contains(&m.id) {
                return out;
            }
            if self.keyed.len() >= FINISHED_MEMORY {
                self.keyed.pop_front();
            }
            self.keyed.push_back(m.id.clone());
        }
        if let Some((_, queue)) = &mut self.blocked {
            queue.push_back((offset, record));
            return out;
        }
        self.emit_record(offset, record, now, &mut out);
        out
    }

    /// A chunk of `chat.stream` at `offset`; `messages_pos` is the reader's next offset on the
    /// conversation's `chat.messages` partition (so whether the chunk's message was read), and
    /// `fence` that partition's latest fence.
    pub fn on_chunk(
        &mut self,
        offset: i64,
        chunk: ReplyChunk,
        messages_pos: i64,
        fence: Epoch,
        now: Instant,
    ) -> Vec<Positioned> {
        let mut out = Vec::new();
        if void(fence, chunk.epoch)
            || self.finished.contains(&chunk.reply_id)
            || self.finished.contains(&chunk.in_reply_to)
        {
            return out;
        }
        let message_emitted = chunk.user_offset < messages_pos && !self.is_queued(chunk.user_offset);
        if !message_emitted {
            self.held_chunks.push((offset, chunk));
            return out;
        }
        self.emit_chunk(offset, chunk, &mut out);
        self.try_unblock(now, false, &mut out);
        out
    }

    /// Releases a final reply whose chunks did not come within `hold`.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Positioned> {
        let mut out = Vec::new();
        self.try_unblock(now, true, &mut out);
        out
    }

    /// `reply`'s tokens were all delivered before (a resume read none of them back): it does
    /// not wait for them.
    pub fn streamed(&mut self, reply: &AgentReply) {
        self.replies.insert(
            reply.id.clone(),
            Progress {
                generation: (reply.epoch, reply.attempt),
                next_seq: reply.chunks,
            },
        );
    }

    /// Whether anything is waiting (the caller ticks only such sequencers).
    pub fn is_waiting(&self) -> bool {
        self.blocked.is_some()
    }

    /// Whether `message` has a reply shown or waiting to be shown.
    fn answered(&self, message: &str) -> bool {
        self.finished.iter().any(|f| f == message)
            || self.blocked.as_ref().is_some_and(|(_, q)| {
                q.iter()
                    .any(|(_, r)| matches!(r, ChatRecord::AgentReply(r) if r.in_reply_to == message))
            })
    }

    fn is_queued(&self, offset: i64) -> bool {
        self.blocked
            .as_ref()
            .is_some_and(|(_, q)| q.iter().any(|(o, _)| *o == offset))
    }

    fn emit_record(&mut self, offset: i64, record: ChatRecord, now: Instant, out: &mut Vec<Positioned>) {
        match record {
            ChatRecord::UserMessage(_) => {
                out.push(Positioned {
                    pos: Pos::new(Topic::Messages, offset),
                    event: LiveEvent::Message {
                        message: MessageView::from(&record),
                    },
                });
                let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_chunks)
                    .into_iter()
                    .partition(|(_, c)| c.user_offset <= offset);
                self.held_chunks = held;
                for (at, c) in ready {
                    self.emit_chunk(at, c, out);
                }
            }
            // a fence is the partition's; an added participant shows as the owner's `joined`
            // a cancel shows as the reply it ends (marked cancelled)
            // a deletion ends what was shown: the stream's route refuses the conversation now
            ChatRecord::EpochFence(_)
            | ChatRecord::ParticipantAdded(_)
            | ChatRecord::CancelRequest(_)
            | ChatRecord::ConversationDeleted(_) => {}
            ChatRecord::AgentReply(ref r) => {
                let complete = r.chunks == 0
                    || self
                        .replies
                        .get(&r.id)
                        .is_some_and(|p| p.generation == (r.epoch, r.attempt) && p.next_seq >= r.chunks);
                if complete {
                    self.finish(offset, &record, out);
                } else {
                    let mut queue = VecDeque::new();
                    queue.push_back((offset, record));
                    self.blocked = Some((now + self.hold, queue));
                }
            }
        }
    }

    fn emit_chunk(&mut self, offset: i64, c: ReplyChunk, out: &mut Vec<Positioned>) {
        let p = self.replies.entry(c.reply_id.clone()).or_default();
        let generation = (c.epoch, c.attempt);
        if generation < p.generation || (generation == p.generation && c.seq < p.next_seq) {
            return; // an earlier generation's, or a duplicate
        }
        p.generation = generation;
        p.next_seq = c.seq + 1;
        out.push(Positioned {
            pos: Pos::new(Topic::Stream, offset),
            event: LiveEvent::token(&c),
        });
    }

    fn finish(&mut self, offset: i64, record: &ChatRecord, out: &mut Vec<Positioned>) {
        if let ChatRecord::AgentReply(r) = record {
            self.replies.remove(&r.id);
            self.held_chunks.retain(|(_, c)| c.in_reply_to != r.in_reply_to);
            self.finished.push_back(r.id.clone());
            self.finished.push_back(r.in_reply_to.clone());
            while self.finished.len() > FINISHED_MEMORY {
                self.finished.pop_front();
            }
        }
        out.push(Positioned {
            pos: Pos::new(Topic::Messages, offset),
            event: LiveEvent::Reply {
                message: MessageView::from(record),
            },
        });
    }

    fn try_unblock(&mut self, now: Instant, allow_timeout: bool, out: &mut Vec<Positioned>) {
        loop {
            let Some((deadline, queue)) = &mut self.blocked else {
                return;
            };
            let Some((_, ChatRecord::AgentReply(head))) = queue.front() else {
                return;
            };
            let complete = self
                .replies
                .get(&head.id)
                .is_some_and(|p| p.generation == (head.epoch, head.attempt) && p.next_seq >= head.chunks);
            let timed_out = allow_timeout && now >= *deadline;
            if !(complete || timed_out) {
                return;
            }
            let Some((_deadline, mut queue)) = self.blocked.take() else {
                return;
            };
            if let Some((at, reply)) = queue.pop_front() {
                self.finish(at, &reply, out);
            }
            while let Some((offset, record)) = queue.pop_front() {
                self.emit_record(offset, record, now, out);
                if let Some((_, rest)) = &mut self.blocked {
                    rest.extend(queue.drain(..));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
