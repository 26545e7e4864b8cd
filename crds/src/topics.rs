//! Topic names, with the optional prefix that lets several meshes (or tests) share a broker.

/// The Kafka topics one MeshChat mesh uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// User messages and final agent replies, key = conversation id: the conversation log.
    pub messages: String,
    /// Presence: users joining and leaving conversations.
    pub users: String,
    /// Compacted conversation snapshots, co-partitioned with `messages`.
    pub conversations: String,
    /// Heartbeats, load reports, handoff and system events.
    pub events: String,
    /// Reply token chunks for live streaming; short retention, key = conversation id.
    pub stream: String,
    /// Compacted assignment tables, key = ChatAgent name.
    pub assignments: String,
}

// === impl Topics ===

impl Topics {
    /// Topic names under `prefix` (empty for the plain `chat.*` names).
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |base: &str| format!("{prefix}{base}");
        Self {
            messages: name("chat.messages"),
            users: name("chat.users"),
            conversations: name("chat.conversations"),
            events: name("chat.events"),
            stream: name("chat.stream"),
            assignments: name("chat.assignments"),
        }
    }
}
