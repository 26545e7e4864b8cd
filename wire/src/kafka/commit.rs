//! The owners' offset commits: where a reader starts, and the fence it must know there.

use rdkafka::{Offset, TopicPartitionList};

/// Metadata an owner stores with its offset commit: the highest epoch fence in the log before
/// the committed offset. A reader that starts at the commit (a take-over, a starting fan-out)
/// then knows which replies after it are void without rereading the log before it.
pub fn commit_metadata(fence: u64) -> String {
    format!("fence={fence}")
}

/// The fence epoch stored by [`commit_metadata`] (0 for commits without one).
pub fn fence_of_commit(metadata: &str) -> u64 {
    metadata
        .strip_prefix("fence=")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// Where reading `topic` partition `p` starts, from `committed` offsets: the committed offset
/// and the fence before it, or the log start (`low`, no fence known) when nothing is committed
/// or the commit fell out of retention.
pub fn commit_start(committed: &TopicPartitionList, topic: &str, p: i32, low: i64) -> (i64, u64) {
    committed
        .find_partition(topic, p)
        .and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= low => Some((o, fence_of_commit(e.metadata()))),
            _ => None,
        })
        .unwrap_or((low, 0))
}
