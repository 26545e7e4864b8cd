//! Creates MeshChat's topics idempotently and checks their layout.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaError, META_TIMEOUT, group, manual_consumer};
use crate::{Partitioning, Topics};

/// Creates the topics of [`Topics::layout`] that do not exist yet, the per-conversation ones
/// with `partitions` partitions, `replication` replicas each and, if given,
/// `min.insync.replicas`. An existing `chat.messages` with another count wins and the
/// co-partitioned topics must match it; returns that count.
pub async fn ensure_topics(
    cfg: &ClientConfig,
    topics: &Topics,
    partitions: i32,
    replication: i32,
    min_insync: Option<i32>,
) -> Result<i32, KafkaError> {
    let min_insync = min_insync.map(|n| n.to_string());
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let layout = topics.layout();
    let new_topics: Vec<NewTopic<'_>> = layout
        .iter()
        .map(|spec| {
            let n = match spec.partitioning {
                Partitioning::PerConversation => partitions,
                Partitioning::Fixed(n) => n,
            };
            let topic = spec.configs.iter().fold(
                NewTopic::new(&spec.name, n, TopicReplication::Fixed(replication)),
                |t, (k, v)| t.set(k, v),
            );
            match &min_insync {
                Some(m) => topic.set("min.insync.replicas", m),
                None => topic,
            }
        })
        .collect();
    // bounded: a broker that refuses our credentials never answers, and the caller says why
    let opts = AdminOptions::new()
        .operation_timeout(Some(META_TIMEOUT))
        .request_timeout(Some(META_TIMEOUT));
    for result in admin.create_topics(new_topics.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Topic {
                    topic,
                    reason: format!("cannot create: {code}"),
                });
            }
        }
    }
    let actual = partition_count(cfg, &topics.messages).await?;
    for name in topics.co_partitioned() {
        let n = partition_count(cfg, name).await?;
        if n != actual {
            return Err(KafkaError::Topic {
                topic: name.to_string(),
                reason: format!(
                    "has {n} partitions but {} has {actual}; they must be co-partitioned",
                    topics.messages
                ),
            });
        }
    }
    Ok(actual)
}

/// What one metadata request says about the cluster and a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Brokers the answer lists (the live ones).
    pub brokers: usize,
    /// The topic's partitions, if it exists.
    pub partitions: Option<i32>,
    /// The fewest replicas any of its partitions has, if it exists.
    pub replicas: Option<usize>,
}

/// Brokers of the cluster and the layout of `topic`, from one metadata request (blocking); an
/// error when no broker answers.
pub fn cluster_view(consumer: &BaseConsumer, topic: &str) -> Result<ClusterView, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), META_TIMEOUT)?;
    let t = md
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty());
    Ok(ClusterView {
        brokers: md.brokers().len(),
        partitions: t.map(|t| t.partitions().len() as i32),
        replicas: t.and_then(|t| t.partitions().iter().map(|p| p.replicas().len()).min()),
    })
}

/// Partitions of `topic` now (one metadata request; blocking).
pub fn topic_partitions(consumer: &BaseConsumer, topic: &str) -> Result<i32, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), META_TIMEOUT)?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
        _ => Err(KafkaError::Topic {
            topic: topic.to_string(),
            reason: "does not exist".into(),
        }),
    }
}

/// Errors a topic created a moment ago answers with until its metadata settled on the broker
/// (seen: `NotLeaderForPartition` right after creation on a fresh KRaft broker).
fn settling(e: &KafkaError) -> bool {
    match e {
        KafkaError::Topic { .. } => true,
        KafkaError::Client(c) => matches!(
            c.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::NotLeaderForPartition
                    | RDKafkaErrorCode::LeaderNotAvailable
                    | RDKafkaErrorCode::UnknownTopicOrPartition
            )
        ),
        _ => false,
    }
}

/// Runs `read` (blocking) until it answers with something other than a new topic's settling
/// errors, for at most ~5 s: right after the workers create the topics, the broker may answer
/// reads of them with `NotLeaderForPartition` for a moment.
pub fn while_settling<T>(mut read: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    let mut last = None;
    for _ in 0..50 {
        match read() {
            Err(e) if settling(&e) => last = Some(e),
            answer => return answer,
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(last.unwrap_or(KafkaError::Timeout { what: "metadata" }))
}

/// Partitions of `topic`, waiting briefly for a new topic's metadata to settle.
pub async fn partition_count(cfg: &ClientConfig, topic: &str) -> Result<i32, KafkaError> {
    let consumer: BaseConsumer = manual_consumer(cfg, group::METADATA).create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || while_settling(|| topic_partitions(&consumer, &topic)))
        .await
        .map_err(|_| KafkaError::Timeout { what: "metadata" })?
}
