//! The Kafka clients both binaries build: client settings, the consumer shapes (tail followers
//! and range readers), the producer, topic creation, log reads and the offset-commit format.
//! Thin shells around rdkafka; what they carry is in `records`.

mod admin;
mod commit;
pub mod group;
pub mod leaderless;
mod logread;
mod offthread;
mod pool;
mod producer;
mod refusal;

pub use admin::{
    ClusterView, cluster_view, ensure_topics, partition_count, topic_partitions, while_settling,
};
pub use commit::{commit_metadata, commit_start, fence_of_commit};
pub use logread::{
    Raw, StoredSnapshot, latest_table, offsets_since, read_one, read_partition, read_partition_with,
    read_range_with, restore_snapshots, supersedes,
};
pub use offthread::DropOffThread;
pub use pool::ReaderPool;
pub use producer::Producer;
pub use refusal::refusal;

use std::time::Duration;

use rdkafka::ClientConfig;

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
    Record(#[from] crate::RecordError),
    /// The operation did not finish in time.
    #[error("kafka: {what} timed out")]
    Timeout {
        /// What was waited for.
        what: &'static str,
    },
}

// === impl KafkaError ===

impl KafkaError {
    /// Whether writing the same record again cannot succeed: it is too large, malformed or not
    /// allowed. The idempotent producer has already retried transient failures (a broker away,
    /// a leader moving) until its delivery timeout, and those may still succeed later.
    pub fn is_permanent(&self) -> bool {
        use rdkafka::error::RDKafkaErrorCode as C;
        match self {
            Self::Client(e) => matches!(
                e.rdkafka_error_code(),
                Some(
                    C::MessageSizeTooLarge
                        | C::InvalidMessageSize
                        | C::InvalidMessage
                        | C::InvalidRecord
                        | C::MessageBatchTooLarge
                        | C::TopicAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::PolicyViolation
                        | C::UnsupportedForMessageFormat
                )
            ),
            Self::Record(_) | Self::Topic { .. } => true,
            Self::Timeout { .. } => false,
        }
    }

    /// Whether a failed write may still have landed: the record left this client and no
    /// answer came back (a timeout, a broken connection). Writing it again may write it twice.
    pub fn may_have_landed(&self) -> bool {
        use rdkafka::error::RDKafkaErrorCode as C;
        match self {
            Self::Client(e) => matches!(
                e.rdkafka_error_code(),
                Some(
                    C::MessageTimedOut
                        | C::RequestTimedOut
                        | C::OperationTimedOut
                        | C::NetworkException
                        | C::BrokerTransportFailure
                        | C::AllBrokersDown
                )
            ),
            Self::Record(_) | Self::Topic { .. } => false,
            Self::Timeout { .. } => true,
        }
    }
}

/// Timeout for metadata and watermark queries.
pub const META_TIMEOUT: Duration = Duration::from_secs(10);

/// Base client settings: bootstrap servers, the client id the broker's logs show, plus extra
/// librdkafka settings (SASL, TLS...).
pub fn client_config(bootstrap: &str, client_id: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("socket.keepalive.enable", "true");
    for (k, v) in extra {
        cfg.set(k, v);
    }
    cfg
}

/// `key=value,key=value` (the worker's `--kafka-properties`) as pairs; blanks are skipped.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("{kv:?} is not key=value")),
        })
        .collect()
}

/// How a consumer that follows a topic's tail fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailFetch {
    /// A fetch long-polls up to 500 ms: the broker answers a waiting fetch as soon as a record
    /// arrives, so this adds no latency, and an idle consumer asks twice a second instead of a
    /// hundred times. A partition added to an assignment joins only the next fetch (the owner
    /// wakes its fetch then).
    LongPoll,
    /// A fetch waits up to this many milliseconds for records to gather: fewer, fuller fetches
    /// for the broker and the worker, at up to this much more latency per hop.
    Batch(u32),
}

impl TailFetch {
    /// `--fetch-batch-ms`: 0 long-polls.
    pub fn from_batch_ms(ms: u32) -> Self {
        if ms == 0 { Self::LongPoll } else { Self::Batch(ms) }
    }
}

/// A consumer that assigns its partitions itself and never commits (`group` only names it, or
/// holds the commits it reads).
pub fn manual_consumer(base: &ClientConfig, group: &str) -> ClientConfig {
    let mut cfg = base.clone();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    cfg
}

/// A manual consumer following topics' tails.
pub fn tail_consumer(base: &ClientConfig, group: &str, fetch: TailFetch) -> ClientConfig {
    let mut cfg = manual_consumer(base, group);
    match fetch {
        TailFetch::LongPoll => cfg.set("fetch.wait.max.ms", "500"),
        TailFetch::Batch(ms) => cfg
            .set("fetch.wait.max.ms", ms.to_string())
            .set("fetch.min.bytes", "1048576"),
    };
    cfg
}

/// A manual consumer reading a range of a partition to its end now: a short fetch wait, since it
/// stops at the end it saw rather than waiting there.
pub fn range_reader(base: &ClientConfig, group: &str) -> ClientConfig {
    let mut cfg = manual_consumer(base, group);
    cfg.set("fetch.wait.max.ms", "10");
    cfg
}

#[cfg(test)]
mod tests;
