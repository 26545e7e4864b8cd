//! The conversation index: one record per conversation on compacted `chat.index`, written by
//! its owner, read by every worker to list a caller's conversations.

use serde::{Deserialize, Serialize};

use super::{Record, v1};

/// What a conversation list shows of one conversation. Key: the conversation's key; a
/// tombstone (no value) removes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// Schema version.
    #[serde(default = "v1")]
    pub v: u16,
    /// Its tenant.
    pub tenant: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The first message's beginning.
    pub title: String,
    /// Users who take part.
    pub participants: Vec<String>,
    /// Its latest message or reply (Unix milliseconds).
    pub last_activity_ms: i64,
    /// Messages and replies so far.
    pub message_count: u64,
}

impl Record for IndexEntry {
    fn version(&self) -> u16 {
        self.v
    }
}
