//! Thin shells around rdkafka: client settings, topic creation, the producer, and log reads.

mod admin;
mod logread;
mod pool;
mod producer;

pub use admin::{ensure_topics, partition_count};
pub use logread::{read_conversation, read_partition, restore_snapshots};
pub use pool::ReaderPool;
pub use producer::Producer;

#[cfg(test)]
mod tests;

use std::time::Duration;

use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A Kafka failure.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client reported an error.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// A topic exists with a layout MeshChat cannot use.
    #[error("topic {topic}: {reason}")]
    Topic {
        /// Topic name.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// A record could not be encoded.
    #[error(transparent)]
    Record(#[from] meshchat_crds::RecordError),
    /// The operation did not finish in time.
    #[error("kafka: {what} timed out")]
    Timeout {
        /// What was waited for.
        what: &'static str,
    },
}

/// Base client settings: bootstrap servers plus `key=value,...` extras (SASL, TLS...).
pub fn client_config(bootstrap: &str, extra: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "meshchat-worker")
        .set("socket.keepalive.enable", "true");
    for kv in extra.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((k, v)) = kv.split_once('=') {
            cfg.set(k.trim(), v.trim());
        }
    }
    cfg
}

/// Fetch settings of every consumer that follows a topic's tail (the owner's, the fan-out's, the
/// mesh view's). With `batch_ms` 0 a fetch long-polls up to 500 ms: the broker answers a waiting
/// fetch as soon as a record arrives, so this adds no latency, and an idle consumer asks twice a
/// second instead of a hundred times (a partition added to an assignment joins only the next
/// fetch: the owner wakes its fetch then, see `owner::OwnerLoop::assign`). Otherwise a fetch
/// waits up to `batch_ms` for records to gather: fewer, fuller fetches for the broker and the
/// worker, at up to `batch_ms` more latency per hop.
pub fn fetch_tail(cfg: &mut ClientConfig, batch_ms: u32) {
    if batch_ms == 0 {
        cfg.set("fetch.wait.max.ms", "500");
    } else {
        cfg.set("fetch.wait.max.ms", batch_ms.to_string())
            .set("fetch.min.bytes", "1048576");
    }
}

/// Metadata an owner stores with its offset commit: the highest epoch fence in the log before
/// the committed offset. A reader that starts at the commit (a take-over, a starting fan-out)
/// then knows which replies after it are void without rereading the log before it.
pub fn commit_metadata(fence: u64) -> String {
    format!("fence={fence}")
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

/// The fence epoch stored by [`commit_metadata`] (0 for commits without one).
pub fn fence_of_commit(metadata: &str) -> u64 {
    metadata
        .strip_prefix("fence=")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// Timeout for metadata and watermark queries.
pub const META_TIMEOUT: Duration = Duration::from_secs(10);
