//! Topic names, with the optional prefix that lets several meshes (or tests) share a broker, and
//! the layout every topic is created with.

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
    /// Compacted conversation index (what conversation lists show), co-partitioned with
    /// `messages`: each owner writes its conversations' entries, every worker reads them all.
    pub index: String,
}

/// How many partitions a topic is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// As many as `chat.messages` (the mesh's placement unit): keyed by conversation id, and
    /// the conversation topics must be co-partitioned with it.
    PerConversation,
    /// A fixed count, whatever the mesh's size.
    Fixed(i32),
}

/// One topic as MeshChat creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name (prefix included).
    pub name: String,
    /// Partition count.
    pub partitioning: Partitioning,
    /// Topic configs set at creation (`cleanup.policy`, `retention.ms`...).
    pub configs: Vec<(&'static str, &'static str)>,
}

/// Partitions of `chat.events` (keyed by worker id and partition: no ordering across keys).
pub const EVENTS_PARTITIONS: i32 = 6;

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
            index: name("chat.index"),
        }
    }

    /// Every topic with its partitioning and configs, in creation order.
    pub fn layout(&self) -> Vec<TopicSpec> {
        let spec = |name: &str, partitioning, configs| TopicSpec {
            name: name.to_string(),
            partitioning,
            configs,
        };
        vec![
            spec(&self.messages, Partitioning::PerConversation, vec![]),
            // snapshots: the latest per conversation is all a take-over reads; the lag keeps a
            // snapshot a take-over is reading from being compacted away under it
            spec(
                &self.conversations,
                Partitioning::PerConversation,
                vec![("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000")],
            ),
            // token chunks are only for live streams
            spec(
                &self.stream,
                Partitioning::PerConversation,
                vec![("retention.ms", "3600000")],
            ),
            spec(&self.users, Partitioning::PerConversation, vec![]),
            spec(
                &self.events,
                Partitioning::Fixed(EVENTS_PARTITIONS),
                vec![("retention.ms", "86400000")],
            ),
            // one entry per conversation, the latest wins
            spec(
                &self.index,
                Partitioning::PerConversation,
                vec![("cleanup.policy", "compact")],
            ),
            // one table per ChatAgent, the latest wins
            spec(
                &self.assignments,
                Partitioning::Fixed(1),
                vec![("cleanup.policy", "compact")],
            ),
        ]
    }

    /// The topics that must have as many partitions as `chat.messages`.
    pub fn co_partitioned(&self) -> [&str; 3] {
        [&self.conversations, &self.stream, &self.index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_is_laid_out_once_under_the_prefix() {
        let t = Topics::with_prefix("x.");
        let layout = t.layout();
        let names: std::collections::BTreeSet<&str> = layout.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), 7);
        assert!(names.iter().all(|n| n.starts_with("x.chat.")));
        for name in t.co_partitioned() {
            let s = layout.iter().find(|s| s.name == name).expect("laid out");
            assert_eq!(s.partitioning, Partitioning::PerConversation);
        }
        let compacted: Vec<&str> = layout
            .iter()
            .filter(|s| s.configs.contains(&("cleanup.policy", "compact")))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            compacted,
            vec!["x.chat.conversations", "x.chat.index", "x.chat.assignments"]
        );
    }
}
