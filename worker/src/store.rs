//! Conversations of the partitions this worker owns, built by applying the log in order.
//! Pure and deterministic: the owner loop feeds it records; replays and restores use the
//! same `apply`, which is idempotent by offset, and the first reply to a message wins.

use std::collections::{BTreeMap, HashMap, VecDeque};

use meshchat_wire::{
    ChatRecord, ConversationSnapshot, SCHEMA_VERSION, SnapshotEntry, UserMessage, split_key,
};

use crate::context::{Role, Turn};
use crate::ownership::{Epoch, Fences, Partition, Verdict, verdict};

/// A retained log record and its token count.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Offset in `chat.messages`.
    pub offset: i64,
    /// The record.
    pub record: ChatRecord,
    /// Tokens of its content.
    pub tokens: u32,
}

/// One conversation's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    /// Its key: the conversation id within its tenant (`meshchat_wire::conversation_key`), which
    /// is also its Kafka key.
    pub key: String,
    /// Users in order of first message.
    pub participants: Vec<String>,
    /// Retained history, oldest first.
    pub entries: VecDeque<Entry>,
    /// Last applied offset (-1 when none).
    pub last_offset: i64,
    /// Unanswered user messages, by offset.
    pub pending: BTreeMap<i64, UserMessage>,
    /// The user message being answered now, if any.
    pub in_flight: Option<String>,
    /// Changed since the last snapshot.
    pub dirty: bool,
    /// Whether any agent reply exists (the agent is then a participant).
    pub agent_replied: bool,
}

/// What applying a record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new user message; `new_participant` when it is the user's first here.
    UserMessage {
        /// First message of this user in the conversation.
        new_participant: bool,
    },
    /// The first reply to a pending message.
    Reply,
    /// Already reflected (offset at or below the last applied one).
    Stale,
    /// A reply to a message that is not pending: a duplicate, dropped.
    DuplicateReply,
    /// A reply of an epoch older than the partition's last fence (a zombie's), dropped.
    Fenced,
    /// A new owner's fence: replies of older epochs after it are void.
    Fence,
    /// A user was added to the conversation.
    Participant {
        /// The user did not take part before.
        new_participant: bool,
    },
}

// === impl Conversation ===

impl Conversation {
    /// An empty conversation with key `key`.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_string(),
            // most conversations are short: room for one exchange (a deque's first growth
            // would reserve four ~300-byte entries)
            entries: VecDeque::with_capacity(2),
            last_offset: -1,
            ..Default::default()
        }
    }

    /// Applies the record at `offset`, keeping at most `limit` entries (pending ones are kept).
    /// `fence` is the partition's highest fence epoch before `offset`: older replies are void.
    pub fn apply(
        &mut self,
        offset: i64,
        record: ChatRecord,
        tokens: u32,
        limit: usize,
        fence: Epoch,
    ) -> Applied {
        if offset <= self.last_offset {
            return Applied::Stale;
        }
        self.last_offset = offset;
        if let ChatRecord::AgentReply(r) = &record {
            match verdict(fence, r.epoch, &r.in_reply_to, |id| {
                self.pending_offset(id).is_none()
            }) {
                Verdict::Void => return Applied::Fenced,
                Verdict::Duplicate => return Applied::DuplicateReply,
                Verdict::Counts => {}
            }
        }
        let applied = match &record {
            ChatRecord::UserMessage(m) => {
                let new_participant = !self.participants.contains(&m.user_id);
                if new_participant {
                    self.participants.push(m.user_id.clone());
                }
                self.pending.insert(offset, m.clone());
                Applied::UserMessage { new_participant }
            }
            ChatRecord::AgentReply(r) => {
                if let Some(at) = self.pending_offset(&r.in_reply_to) {
                    self.pending.remove(&at);
                }
                if self.pending.is_empty() {
                    // an emptied map keeps its ~2 KB leaf node: most conversations sit idle with
                    // nothing pending, so give it back
                    self.pending = BTreeMap::new();
                }
                if self.in_flight.as_deref() == Some(r.in_reply_to.as_str()) {
                    self.in_flight = None;
                }
                self.agent_replied = true;
                Applied::Reply
            }
            ChatRecord::EpochFence(_) => return Applied::Fence,
            ChatRecord::ParticipantAdded(p) => {
                // membership, not history: the participant list (snapshotted) is where it lives
                let new_participant = !self.participants.contains(&p.user_id);
                if new_participant {
                    self.participants.push(p.user_id.clone());
                    self.dirty = true;
                }
                return Applied::Participant { new_participant };
            }
        };
        self.entries.push_back(Entry {
            offset,
            record,
            tokens,
        });
        self.dirty = true;
        self.evict(limit);
        applied
    }

    fn pending_offset(&self, id: &str) -> Option<i64> {
        self.pending.iter().find(|(_, m)| m.id == id).map(|(o, _)| *o)
    }

    fn evict(&mut self, limit: usize) {
        while self.entries.len() > limit {
            let Some(front) = self.entries.front() else { break };
            if self.pending.contains_key(&front.offset) {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// The oldest unanswered message, when nothing is being answered (one at a time keeps
    /// replies in order and gives each answer the previous reply as context).
    pub fn next_to_answer(&self) -> Option<(i64, &UserMessage)> {
        if self.in_flight.is_some() {
            return None;
        }
        self.pending.iter().next().map(|(o, m)| (*o, m))
    }

    /// History up to and including the user message at `offset`, as context turns.
    /// Error replies are not context.
    pub fn turns_until(&self, offset: i64) -> Vec<Turn> {
        self.entries
            .iter()
            .filter(|e| e.offset <= offset)
            .filter_map(|e| match &e.record {
                ChatRecord::UserMessage(m) => Some(Turn {
                    role: Role::User,
                    content: m.content.clone(),
                    tokens: e.tokens,
                }),
                ChatRecord::AgentReply(r) if r.error.is_none() => Some(Turn {
                    role: Role::Assistant,
                    content: r.content.clone(),
                    tokens: e.tokens,
                }),
                ChatRecord::AgentReply(_) | ChatRecord::EpochFence(_) | ChatRecord::ParticipantAdded(_) => {
                    None
                }
            })
            .collect()
    }

    /// The conversation as a snapshot record.
    pub fn to_snapshot(&self, epoch: u64) -> ConversationSnapshot {
        let (tenant, id) = split_key(&self.key);
        ConversationSnapshot {
            v: SCHEMA_VERSION,
            conversation_id: id.to_string(),
            tenant: tenant.to_string(),
            participants: self.participants.clone(),
            entries: self
                .entries
                .iter()
                .map(|e| SnapshotEntry {
                    offset: e.offset,
                    record: e.record.clone(),
                })
                .collect(),
            pending: self.pending.values().map(|m| m.id.clone()).collect(),
            last_offset: self.last_offset,
            epoch,
        }
    }

    /// Restores a conversation from its snapshot; `count` gives token counts.
    pub fn from_snapshot(s: ConversationSnapshot, count: impl Fn(&str) -> u32) -> Self {
        let mut conv = Conversation::new(&s.key());
        conv.participants = s.participants;
        conv.last_offset = s.last_offset;
        for e in s.entries {
            let tokens = count(content_of(&e.record));
            match &e.record {
                ChatRecord::UserMessage(m) if s.pending.contains(&m.id) => {
                    conv.pending.insert(e.offset, m.clone());
                }
                ChatRecord::AgentReply(r) if r.error.is_none() => conv.agent_replied = true,
                _ => {}
            }
            conv.entries.push_back(Entry {
                offset: e.offset,
                record: e.record,
                tokens,
            });
        }
        conv
    }
}

/// The text of a record.
pub fn content_of(record: &ChatRecord) -> &str {
    match record {
        ChatRecord::UserMessage(m) => &m.content,
        ChatRecord::AgentReply(r) => &r.content,
        ChatRecord::EpochFence(_) | ChatRecord::ParticipantAdded(_) => "",
    }
}

/// All conversations this worker holds.
#[derive(Debug, Default)]
pub struct Store {
    conversations: HashMap<String, Conversation>,
    /// Highest fence epoch seen per partition.
    fences: Fences,
    /// Entries kept per conversation.
    pub history_limit: usize,
}

// === impl Store ===

impl Store {
    /// An empty store keeping `history_limit` entries per conversation.
    pub fn new(history_limit: usize) -> Self {
        Self {
            conversations: HashMap::new(),
            fences: Fences::default(),
            history_limit: history_limit.max(1),
        }
    }

    /// Applies a record of `partition` at `offset`.
    pub fn apply(&mut self, partition: Partition, offset: i64, record: ChatRecord, tokens: u32) -> Applied {
        if let ChatRecord::EpochFence(f) = &record {
            self.fences.observe(partition, f.epoch);
            return Applied::Fence;
        }
        let fence = self.fences.get(partition);
        let limit = self.history_limit;
        let key = record.key();
        self.conversations
            .entry(key)
            .or_insert_with_key(|key| Conversation::new(key))
            .apply(offset, record, tokens, limit, fence)
    }

    /// Highest fence epoch seen in `partition`.
    pub fn fence(&self, partition: Partition) -> Epoch {
        self.fences.get(partition)
    }

    /// Starts `partition` knowing `epoch` was fenced before where reading begins (from the
    /// commit's metadata): a replay from there drops that fence's older replies too.
    pub fn seed_fence(&mut self, partition: Partition, epoch: Epoch) {
        self.fences.observe(partition, epoch);
    }

    /// Forgets a partition's fence (it is released; a later owner reads fences again).
    pub fn forget_fence(&mut self, partition: Partition) {
        self.fences.forget(partition);
    }

    /// Installs a restored conversation, unless a newer state is already held.
    pub fn restore(&mut self, conv: Conversation) {
        match self.conversations.get(&conv.key) {
            Some(have) if have.last_offset >= conv.last_offset => {}
            _ => {
                self.conversations.insert(conv.key.clone(), conv);
            }
        }
    }

    /// A conversation by id.
    pub fn get(&self, id: &str) -> Option<&Conversation> {
        self.conversations.get(id)
    }

    /// A conversation by id, mutable.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Conversation> {
        self.conversations.get_mut(id)
    }

    /// Number of conversations held.
    pub fn len(&self) -> usize {
        self.conversations.len()
    }

    /// Whether no conversation is held.
    pub fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }

    /// Conversations, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Conversation> {
        self.conversations.values()
    }

    /// Conversations, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Conversation> {
        self.conversations.values_mut()
    }

    /// Drops every conversation `keep` rejects (used when partitions are released).
    pub fn retain(&mut self, mut keep: impl FnMut(&Conversation) -> bool) {
        self.conversations.retain(|_, c| keep(c));
    }
}

#[cfg(test)]
mod tests;
