//! Conversations of the partitions this worker owns, built by applying the log in order.
//! Pure and deterministic: the owner loop feeds it records; replays and restores use the
//! same `apply`, which is idempotent by offset, and the first reply to a message wins.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use meshchat_wire::{
    ChatRecord, ConversationSnapshot, KEYED_ID_PREFIX, KeyedId, RecordError, Refused, RefusedWhy,
    SCHEMA_VERSION, SnapshotEntry, UserMessage, encode, split_key,
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

/// What a conversation keeps: history (entries and their estimated encoded bytes; what is left
/// out stays in the log), and how many unanswered messages and participants it takes — a
/// message past those gets an error reply instead of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    /// Most entries.
    pub entries: usize,
    /// Most bytes of entries, as estimated by [`entry_bytes`].
    pub bytes: usize,
    /// Most unanswered messages.
    pub pending: usize,
    /// Most participants.
    pub participants: usize,
    /// A new message cancels the replies earlier ones wait for (`--while-replying interrupt`).
    pub interrupt: bool,
}

impl From<usize> for Keep {
    /// A count of entries alone.
    fn from(entries: usize) -> Self {
        Self {
            entries,
            bytes: usize::MAX,
            pending: usize::MAX,
            participants: usize::MAX,
            interrupt: false,
        }
    }
}

/// An entry's size in a snapshot record, estimated: its text and what surrounds it (ids,
/// timestamps, field names). The record is measured exactly when it is written.
pub fn entry_bytes(record: &ChatRecord) -> usize {
    content_of(record).len() + 320
}

/// A snapshot ready to write.
#[derive(Debug)]
pub struct Snapshot {
    /// The record.
    pub record: ConversationSnapshot,
    /// Its encoding, at most the size asked for.
    pub bytes: Vec<u8>,
}

/// A snapshot could not be made small enough.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Encoding failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Even without any history the record is larger than allowed (participants, say).
    #[error("conversation {key}: a snapshot without history is still {bytes} bytes (limit {max})")]
    TooLarge {
        /// The conversation.
        key: String,
        /// Its smallest encoding.
        bytes: usize,
        /// The limit.
        max: usize,
    },
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
    /// Estimated bytes of `entries` (see [`entry_bytes`]).
    pub bytes: usize,
    /// Offsets at or below `last_offset` still to be applied: unanswered messages a restored
    /// snapshot left out (`ConversationSnapshot::unstored`).
    pub reread: BTreeSet<i64>,
    /// The oldest offset the last written snapshot left out: the partition's commit stays at
    /// or below it until a later snapshot holds everything again.
    pub holds_commit: Option<i64>,
    /// `last_offset` of the last snapshot written or restored (-1 when none).
    pub stored_through: i64,
    /// Ids of messages sent with an idempotency key, oldest first, with their acceptance
    /// time: a record with one of them again is a retry (see [`KEYED_MEMORY`]).
    pub keyed: VecDeque<KeyedId>,
    /// Unanswered messages that get an error reply instead of an answer, by offset.
    pub refused: BTreeMap<i64, RefusedWhy>,
    /// When its latest record was accepted or written (Unix seconds): how idle it is.
    pub last_at: i64,
    /// Offset in the snapshot topic of the last snapshot written or restored: where it comes
    /// back from once evicted.
    pub snapshot_offset: Option<i64>,
    /// Older history left memory (it stays in the log: `?before=` pages read it there).
    pub trimmed: bool,
    /// The first message's beginning: its title in conversation lists.
    pub title: Option<String>,
    /// Messages and replies so far.
    pub message_count: u64,
    /// Its latest message or reply (Unix milliseconds).
    pub last_activity_ms: i64,
    /// Changed since its conversation index entry was last written.
    pub index_dirty: bool,
}

/// How long, and for how many messages at most, a conversation remembers idempotency keys.
pub const KEYED_MEMORY: (i64, usize) = (24 * 3600, 4096);

/// What applying a record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new user message; `new_participant` when it is the user's first here.
    UserMessage {
        /// First message of this user in the conversation.
        new_participant: bool,
        /// Set when a conversation limit refuses it an answer (it gets an error reply).
        refused: Option<RefusedWhy>,
        /// With `interrupt`: earlier messages whose replies it cancels, as [`Applied::Cancel`]'s
        /// target.
        interrupts: Vec<(i64, bool)>,
    },
    /// The first reply to a pending message.
    Reply,
    /// The conversation was deleted: everything before is gone.
    Deleted,
    /// Already reflected (offset at or below the last applied one).
    Stale,
    /// A reply to a message that is not pending: a duplicate, dropped.
    DuplicateReply,
    /// A reply of an epoch older than the partition's last fence (a zombie's), dropped.
    Fenced,
    /// A user message whose id is already in the conversation (a retried send with the same
    /// idempotency key), dropped.
    DuplicateMessage,
    /// A new owner's fence: replies of older epochs after it are void.
    Fence,
    /// A user was added to the conversation.
    Participant {
        /// The user did not take part before.
        new_participant: bool,
    },
    /// A cancel request: the message whose reply it stops (its offset), and whether that
    /// reply is being generated now; `None` when nothing waited for a reply.
    Cancel {
        /// The message's offset and whether its answer is in flight.
        target: Option<(i64, bool)>,
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
            stored_through: -1,
            ..Default::default()
        }
    }

    /// Applies the record at `offset`, keeping what `keep` allows (pending entries are kept).
    /// `fence` is the partition's highest fence epoch before `offset`: older replies are void.
    pub fn apply(
        &mut self,
        offset: i64,
        record: ChatRecord,
        tokens: u32,
        keep: impl Into<Keep>,
        fence: Epoch,
    ) -> Applied {
        // a message a snapshot left out comes back from the log below the snapshot's offset
        let reread = offset <= self.last_offset
            && matches!(record, ChatRecord::UserMessage(_))
            && self.reread.remove(&offset);
        if offset <= self.last_offset && !reread {
            return Applied::Stale;
        }
        self.last_offset = self.last_offset.max(offset);
        self.last_at = self.last_at.max(record_time(&record));
        if let ChatRecord::AgentReply(r) = &record {
            match verdict(fence, r.epoch, &r.in_reply_to, |id| {
                self.pending_offset(id).is_none()
            }) {
                Verdict::Void => return Applied::Fenced,
                Verdict::Duplicate => return Applied::DuplicateReply,
                Verdict::Counts => {}
            }
        }
        if let ChatRecord::UserMessage(m) = &record
            && m.id.starts_with(KEYED_ID_PREFIX)
            && !self.remember_keyed(m)
        {
            return Applied::DuplicateMessage;
        }
        let keep = keep.into();
        let applied = match &record {
            ChatRecord::UserMessage(m) => {
                let new_participant = !self.participants.contains(&m.user_id);
                // refused messages are pending too (their error reply must count), but not
                // answered: they wait for no one
                let refused = if new_participant && self.participants.len() >= keep.participants {
                    Some(RefusedWhy::Participants)
                } else if self.pending.len() >= keep.pending {
                    Some(RefusedWhy::Pending)
                } else {
                    None
                };
                if new_participant && refused != Some(RefusedWhy::Participants) {
                    self.participants.push(m.user_id.clone());
                }
                // with `interrupt`, an answered message cancels what earlier ones wait for
                let interrupts: Vec<(i64, bool)> = if keep.interrupt && refused.is_none() {
                    self.pending
                        .iter()
                        .filter(|(o, _)| !self.refused.contains_key(o))
                        .map(|(o, m)| (*o, self.in_flight.as_deref() == Some(m.id.as_str())))
                        .collect()
                } else {
                    Vec::new()
                };
                for (at, _) in &interrupts {
                    self.refused.insert(*at, RefusedWhy::Cancelled);
                }
                self.pending.insert(offset, m.clone());
                if let Some(why) = refused {
                    self.refused.insert(offset, why);
                }
                Applied::UserMessage {
                    new_participant: new_participant && refused != Some(RefusedWhy::Participants),
                    refused,
                    interrupts,
                }
            }
            ChatRecord::AgentReply(r) => {
                if let Some(at) = self.pending_offset(&r.in_reply_to) {
                    self.pending.remove(&at);
                    self.refused.remove(&at);
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
                let new_participant =
                    !self.participants.contains(&p.user_id) && self.participants.len() < keep.participants;
                if new_participant {
                    self.participants.push(p.user_id.clone());
                    self.dirty = true;
                    self.index_dirty = true;
                }
                return Applied::Participant { new_participant };
            }
            ChatRecord::ConversationDeleted(_) => {
                // a reader of the log: what came before is gone; a later message starts afresh
                *self = Conversation::new(&self.key);
                self.last_offset = offset;
                return Applied::Deleted;
            }
            ChatRecord::CancelRequest(_) => {
                // the earliest message before it still waiting for its answer (one refused by a
                // limit has its error reply coming); marked so that a snapshot, or a new owner
                // replaying, gives it a cancelled reply too
                let target = self
                    .pending
                    .iter()
                    .find(|(o, _)| **o < offset && !self.refused.contains_key(o))
                    .map(|(o, m)| (*o, self.in_flight.as_deref() == Some(m.id.as_str())));
                if let Some((at, _)) = target {
                    self.refused.insert(at, RefusedWhy::Cancelled);
                    self.dirty = true;
                }
                return Applied::Cancel { target };
            }
        };
        if !reread {
            self.message_count += 1;
        }
        self.last_activity_ms = self.last_activity_ms.max(record_time_ms(&record));
        if let (None, ChatRecord::UserMessage(m)) = (&self.title, &record) {
            self.title = Some(title_of(&m.content));
        }
        self.index_dirty = true;
        self.push(Entry {
            offset,
            record,
            tokens,
        });
        self.dirty = true;
        self.evict(keep);
        applied
    }

    /// Adds an entry in offset order (a re-read message lands among newer ones).
    fn push(&mut self, entry: Entry) {
        self.bytes += entry_bytes(&entry.record);
        if self.entries.back().is_none_or(|b| b.offset < entry.offset) {
            self.entries.push_back(entry);
        } else {
            let at = self.entries.partition_point(|e| e.offset < entry.offset);
            self.entries.insert(at, entry);
        }
    }

    /// Remembers a keyed message's id; `false` when it was already there. Pure: time is the
    /// messages' own acceptance time, so replays decide alike.
    fn remember_keyed(&mut self, m: &UserMessage) -> bool {
        if self.keyed.iter().any(|k| k.id == m.id) {
            return false;
        }
        let at = m.accepted_at.unwrap_or(m.timestamp).unix_timestamp();
        let (keep_secs, keep_most) = KEYED_MEMORY;
        while self
            .keyed
            .front()
            .is_some_and(|k| k.at < at - keep_secs || self.keyed.len() >= keep_most)
        {
            self.keyed.pop_front();
        }
        self.keyed.push_back(KeyedId { id: m.id.clone(), at });
        true
    }

    fn pending_offset(&self, id: &str) -> Option<i64> {
        self.pending.iter().find(|(_, m)| m.id == id).map(|(o, _)| *o)
    }

    fn evict(&mut self, keep: Keep) {
        while self.entries.len() > keep.entries || self.bytes > keep.bytes {
            let Some(front) = self.entries.front() else { break };
            if self.pending.contains_key(&front.offset) {
                break;
            }
            if let Some(gone) = self.entries.pop_front() {
                self.bytes = self.bytes.saturating_sub(entry_bytes(&gone.record));
                self.trimmed = true;
            }
        }
    }

    /// The oldest unanswered message, when nothing is being answered (one at a time keeps
    /// replies in order and gives each answer the previous reply as context).
    pub fn next_to_answer(&self) -> Option<(i64, &UserMessage)> {
        if self.in_flight.is_some() {
            return None;
        }
        self.pending
            .iter()
            .find(|(o, _)| !self.refused.contains_key(o))
            .map(|(o, m)| (*o, m))
    }

    /// Refused messages still waiting for their error reply.
    pub fn refused_pending(&self) -> impl Iterator<Item = (i64, &UserMessage, RefusedWhy)> {
        self.refused
            .iter()
            .filter_map(|(o, why)| self.pending.get(o).map(|m| (*o, m, *why)))
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
                ChatRecord::AgentReply(_)
                | ChatRecord::EpochFence(_)
                | ChatRecord::ParticipantAdded(_)
                | ChatRecord::CancelRequest(_)
                | ChatRecord::ConversationDeleted(_) => None,
            })
            .collect()
    }

    /// The conversation as a snapshot record.
    pub fn to_snapshot(&self, epoch: u64) -> ConversationSnapshot {
        self.snapshot_of(epoch, |_| true)
    }

    fn snapshot_of(&self, epoch: u64, mut include: impl FnMut(&Entry) -> bool) -> ConversationSnapshot {
        let (tenant, id) = split_key(&self.key);
        let entries: Vec<SnapshotEntry> = self
            .entries
            .iter()
            .filter(|e| include(e))
            .map(|e| SnapshotEntry {
                offset: e.offset,
                record: e.record.clone(),
            })
            .collect();
        let kept: BTreeSet<i64> = entries.iter().map(|e| e.offset).collect();
        let mut unstored: Vec<i64> = self.reread.iter().copied().collect();
        unstored.extend(self.pending.keys().filter(|o| !kept.contains(o)));
        unstored.sort_unstable();
        ConversationSnapshot {
            v: SCHEMA_VERSION,
            conversation_id: id.to_string(),
            tenant: tenant.to_string(),
            participants: self.participants.clone(),
            entries,
            pending: self
                .pending
                .iter()
                .filter(|(o, _)| kept.contains(o))
                .map(|(_, m)| m.id.clone())
                .collect(),
            last_offset: self.last_offset,
            keyed: self.keyed.iter().cloned().collect(),
            refused: self
                .refused
                .iter()
                .map(|(offset, why)| Refused {
                    offset: *offset,
                    why: *why,
                })
                .collect(),
            unstored,
            trimmed: self.trimmed || kept.len() < self.entries.len(),
            title: self.title.clone(),
            message_count: self.message_count,
            epoch,
        }
    }

    /// The conversation as a snapshot record of at most `max_bytes`: every entry when they
    /// fit; otherwise the unanswered messages (oldest first) and then the newest history that
    /// fits. Unanswered messages left out are named by offset, to be read back from the log;
    /// older history stays in the log only.
    pub fn to_snapshot_within(&self, epoch: u64, max_bytes: usize) -> Result<Snapshot, SnapshotError> {
        let record = self.to_snapshot(epoch);
        let bytes = encode(&record)?;
        if bytes.len() <= max_bytes {
            return Ok(Snapshot { record, bytes });
        }
        let bare = encode(&self.snapshot_of(epoch, |_| false))?.len();
        // each entry costs its encoding and a comma; an offset in `unstored` at most 21 bytes
        let sizes: BTreeMap<i64, usize> = self
            .entries
            .iter()
            .map(|e| {
                let entry = SnapshotEntry {
                    offset: e.offset,
                    record: e.record.clone(),
                };
                Ok((
                    e.offset,
                    serde_json::to_vec(&entry).map_err(RecordError::from)?.len() + 1,
                ))
            })
            .collect::<Result<_, SnapshotError>>()?;
        let mut room = max_bytes.saturating_sub(bare + 21 * self.pending.len());
        let mut kept = BTreeSet::new();
        let mut take = |offset: &i64| match sizes.get(offset) {
            Some(&size) if size <= room => {
                room -= size;
                kept.insert(*offset);
                true
            }
            _ => false,
        };
        // unanswered messages first, oldest first (a large one left out may leave room for a
        // smaller one); then history, newest first and without gaps
        for offset in self.pending.keys() {
            take(offset);
        }
        for e in self.entries.iter().rev() {
            if !self.pending.contains_key(&e.offset) && !take(&e.offset) {
                break;
            }
        }
        let record = self.snapshot_of(epoch, |e| kept.contains(&e.offset));
        let bytes = encode(&record)?;
        if bytes.len() > max_bytes {
            return Err(SnapshotError::TooLarge {
                key: self.key.clone(),
                bytes: bare,
                max: max_bytes,
            });
        }
        Ok(Snapshot { record, bytes })
    }

    /// Restores a conversation from its snapshot; `count` gives token counts.
    pub fn from_snapshot(s: ConversationSnapshot, count: impl Fn(&str) -> u32) -> Self {
        let mut conv = Conversation::new(&s.key());
        conv.participants = s.participants;
        conv.last_offset = s.last_offset;
        conv.stored_through = s.last_offset;
        conv.keyed = s.keyed.into_iter().collect();
        conv.refused = s.refused.into_iter().map(|r| (r.offset, r.why)).collect();
        conv.last_at = s
            .entries
            .iter()
            .map(|e| record_time(&e.record))
            .max()
            .unwrap_or(0);
        conv.holds_commit = s.unstored.first().copied();
        conv.trimmed = s.trimmed;
        conv.message_count = if s.message_count > 0 {
            s.message_count
        } else {
            u64::try_from(s.entries.len()).unwrap_or(0)
        };
        conv.last_activity_ms = s
            .entries
            .iter()
            .map(|e| record_time_ms(&e.record))
            .max()
            .unwrap_or(0);
        conv.title = s.title.or_else(|| {
            s.entries.iter().find_map(|e| match &e.record {
                ChatRecord::UserMessage(m) if !s.trimmed => Some(title_of(&m.content)),
                _ => None,
            })
        });
        conv.reread = s.unstored.into_iter().collect();
        for e in s.entries {
            let tokens = count(content_of(&e.record));
            match &e.record {
                ChatRecord::UserMessage(m) if s.pending.contains(&m.id) => {
                    conv.pending.insert(e.offset, m.clone());
                }
                ChatRecord::AgentReply(r) if r.error.is_none() => conv.agent_replied = true,
                _ => {}
            }
            conv.push(Entry {
                offset: e.offset,
                record: e.record,
                tokens,
            });
        }
        conv
    }

    /// Whether it may leave memory: everything it holds is in its last snapshot, and it waits
    /// for nothing.
    pub fn evictable(&self) -> bool {
        !self.dirty
            && self.pending.is_empty()
            && self.in_flight.is_none()
            && self.reread.is_empty()
            && self.holds_commit.is_none()
            && self.snapshot_offset.is_some()
            && self.stored_through == self.last_offset
    }

    /// Where reading the log must begin to complete this conversation.
    pub fn read_from(&self) -> i64 {
        self.reread.first().copied().unwrap_or(self.last_offset + 1)
    }
}

/// When a record was accepted or written, in Unix seconds (0 for records without a time).
/// Characters of the first message a conversation list shows as its title.
pub const TITLE_CHARS: usize = 80;

/// A title: the text's first [`TITLE_CHARS`] characters, spaces folded.
pub fn title_of(content: &str) -> String {
    let folded: Vec<&str> = content.split_whitespace().collect();
    folded.join(" ").chars().take(TITLE_CHARS).collect()
}

/// When a record was accepted or written, Unix milliseconds (0 for a fence).
pub fn record_time_ms(record: &ChatRecord) -> i64 {
    let at = match record {
        ChatRecord::UserMessage(m) => m.accepted_at.unwrap_or(m.timestamp),
        ChatRecord::AgentReply(r) => r.timestamp,
        ChatRecord::ParticipantAdded(p) => p.timestamp,
        ChatRecord::CancelRequest(c) => c.timestamp,
        ChatRecord::ConversationDeleted(d) => d.timestamp,
        ChatRecord::EpochFence(_) => return 0,
    };
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// When a record was accepted or written, Unix seconds (0 for a fence).
pub fn record_time(record: &ChatRecord) -> i64 {
    match record {
        ChatRecord::UserMessage(m) => m.accepted_at.unwrap_or(m.timestamp).unix_timestamp(),
        ChatRecord::AgentReply(r) => r.timestamp.unix_timestamp(),
        ChatRecord::ParticipantAdded(p) => p.timestamp.unix_timestamp(),
        ChatRecord::CancelRequest(c) => c.timestamp.unix_timestamp(),
        ChatRecord::ConversationDeleted(d) => d.timestamp.unix_timestamp(),
        ChatRecord::EpochFence(_) => 0,
    }
}

/// The text of a record.
pub fn content_of(record: &ChatRecord) -> &str {
    match record {
        ChatRecord::UserMessage(m) => &m.content,
        ChatRecord::AgentReply(r) => &r.content,
        ChatRecord::EpochFence(_)
        | ChatRecord::ParticipantAdded(_)
        | ChatRecord::CancelRequest(_)
        | ChatRecord::ConversationDeleted(_) => "",
    }
}

/// All conversations this worker holds.
#[derive(Debug)]
pub struct Store {
    conversations: HashMap<String, Conversation>,
    /// Highest fence epoch seen per partition.
    fences: Fences,
    /// History kept per conversation.
    pub keep: Keep,
    /// Conversations evicted from memory: a hash of the key, the partition, and the offset of
    /// their last snapshot (a collision only costs a slower restore: the record's key is
    /// checked).
    evicted: HashMap<u64, (Partition, i64)>,
    /// Keys of conversations deleted since the last snapshot round: their snapshots and index
    /// entries get tombstones then.
    pub deleted: Vec<(Partition, String)>,
}

/// What the eviction index keys a conversation by.
fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

// === impl Store ===

impl Store {
    /// An empty store keeping `keep` history per conversation.
    pub fn new(keep: impl Into<Keep>) -> Self {
        let keep = keep.into();
        Self {
            conversations: HashMap::new(),
            fences: Fences::default(),
            keep: Keep {
                entries: keep.entries.max(1),
                ..keep
            },
            evicted: HashMap::new(),
            deleted: Vec::new(),
        }
    }

    /// Applies a record of `partition` at `offset`.
    pub fn apply(&mut self, partition: Partition, offset: i64, record: ChatRecord, tokens: u32) -> Applied {
        if let ChatRecord::EpochFence(f) = &record {
            self.fences.observe(partition, f.epoch);
            return Applied::Fence;
        }
        let fence = self.fences.get(partition);
        let limit = self.keep;
        let key = record.key();
        match &record {
            ChatRecord::ConversationDeleted(_) => {
                self.conversations.remove(&key);
                self.evicted.remove(&key_hash(&key));
                self.deleted.push((partition, key));
                return Applied::Deleted;
            }
            // a reply or a cancel of no conversation here (it was deleted) creates none
            ChatRecord::AgentReply(_) if !self.conversations.contains_key(&key) => {
                return Applied::DuplicateReply;
            }
            ChatRecord::CancelRequest(_) if !self.conversations.contains_key(&key) => {
                return Applied::Cancel { target: None };
            }
            _ => {}
        }
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
        self.evicted.remove(&key_hash(&conv.key));
        match self.conversations.get(&conv.key) {
            Some(have) if have.last_offset >= conv.last_offset => {}
            _ => {
                self.conversations.insert(conv.key.clone(), conv);
            }
        }
    }

    /// Where an evicted conversation's last snapshot is: its partition and offset (`None`: in
    /// memory, or never seen).
    pub fn evicted(&self, key: &str) -> Option<(Partition, i64)> {
        if self.conversations.contains_key(key) {
            return None;
        }
        self.evicted.get(&key_hash(key)).copied()
    }

    /// Conversations evicted from memory.
    pub fn evicted_len(&self) -> usize {
        self.evicted.len()
    }

    /// Records a conversation as evicted without holding it (a take-over's idle ones).
    pub fn index_evicted(&mut self, key: &str, partition: Partition, snapshot_offset: i64) {
        if !self.conversations.contains_key(key) {
            self.evicted.insert(key_hash(key), (partition, snapshot_offset));
        }
    }

    /// Evicts conversations idle for `idle_secs` at `now` (Unix seconds), then the least
    /// recently active ones while more than `max_resident` are held; only those whose whole
    /// state is in their last snapshot. `partition_of` places a key. Returns how many left.
    pub fn evict_idle(
        &mut self,
        now: i64,
        idle_secs: i64,
        max_resident: usize,
        partition_of: impl Fn(&str) -> Partition,
    ) -> usize {
        // counted first: most rounds evict nothing, and cloning every key to find that out
        // would cost a pass of allocations over all held conversations each round
        let over = self.conversations.len().saturating_sub(max_resident);
        let (mut evictable, mut idle) = (0, 0);
        for c in self.conversations.values().filter(|c| c.evictable()) {
            evictable += 1;
            idle += usize::from(now - c.last_at >= idle_secs);
        }
        let n = idle.max(over).min(evictable);
        if n == 0 {
            return 0;
        }
        let mut candidates: Vec<(i64, String)> = self
            .conversations
            .values()
            .filter(|c| c.evictable())
            .map(|c| (c.last_at, c.key.clone()))
            .collect();
        // the n least recently active: every idle one, and more while over the cap
        if n < candidates.len() {
            candidates.select_nth_unstable(n);
            candidates.truncate(n);
        }
        for (_, key) in &candidates {
            if let Some(c) = self.conversations.remove(key)
                && let Some(offset) = c.snapshot_offset
            {
                self.evicted.insert(key_hash(key), (partition_of(key), offset));
            }
        }
        if self.conversations.capacity() > 2 * self.conversations.len() + 1024 {
            self.conversations.shrink_to_fit();
        }
        candidates.len()
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

    /// Forgets the evicted conversations of `partition` (it is released).
    pub fn forget_evicted(&mut self, partition: Partition) {
        self.evicted.retain(|_, (p, _)| *p != partition);
    }
}

#[cfg(test)]
mod tests;
