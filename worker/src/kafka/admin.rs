//! Creates MeshChat's topics idempotently and checks their layout.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaError, META_TIMEOUT};
use meshchat_crds::Topics;

/// Creates the topics that do not exist yet. `chat.messages`, `chat.conversations` and
/// `chat.stream` get `partitions` partitions (co-partitioned); an existing `chat.messages` with
/// another count wins and the others must match it.
pub async fn ensure_topics(
    cfg: &ClientConfig,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<i32, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let keyed = [
        (topics.messages.as_str(), vec![]),
        (
            topics.conversations.as_str(),
            vec![("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000")],
        ),
        (topics.stream.as_str(), vec![("retention.ms", "3600000")]),
        (topics.users.as_str(), vec![]),
    ];
    let others = [
        (topics.events.as_str(), 6, vec![("retention.ms", "86400000")]),
        (
            topics.assignments.as_str(),
            1,
            vec![("cleanup.policy", "compact")],
        ),
    ];
    let mut new_topics = Vec::new();
    for (name, config) in &keyed {
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (k, v) in config {
            t = t.set(k, v);
        }
        new_topics.push(t);
    }
    for (name, n, config) in &others {
        let mut t = NewTopic::new(name, *n, TopicReplication::Fixed(replication));
        for (k, v) in config {
            t = t.set(k, v);
        }
        new_topics.push(t);
    }
    let opts = AdminOptions::new().operation_timeout(Some(META_TIMEOUT));
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
    for name in [&topics.conversations, &topics.stream] {
        let n = partition_count(cfg, name).await?;
        if n != actual {
            return Err(KafkaError::Topic {
                topic: name.clone(),
                reason: format!(
                    "has {n} partitions but {} has {actual}; they must be co-partitioned",
                    topics.messages
                ),
            });
        }
    }
    Ok(actual)
}

/// Partitions of `topic`, waiting briefly for new topics' metadata to settle.
pub async fn partition_count(cfg: &ClientConfig, topic: &str) -> Result<i32, KafkaError> {
    let consumer: BaseConsumer = cfg.clone().set("group.id", "meshchat-meta").create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            let md = consumer.fetch_metadata(Some(&topic), META_TIMEOUT)?;
            if let Some(t) = md.topics().first()
                && t.error().is_none()
                && !t.partitions().is_empty()
            {
                return Ok(t.partitions().len() as i32);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(KafkaError::Topic {
            topic,
            reason: "does not exist".into(),
        })
    })
    .await
    .map_err(|_| KafkaError::Timeout { what: "metadata" })?
}
