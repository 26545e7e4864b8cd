//! The idempotent producer every write goes through.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::KafkaError;

/// Idempotent, acks=all producer. Records are sent with an explicit partition computed with
/// Kafka's murmur2 so Java producers and MeshChat agree on placement.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
}

// === impl Producer ===

impl Producer {
    /// Creates the producer.
    pub fn new(base: &ClientConfig) -> Result<Self, KafkaError> {
        let inner: FutureProducer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { inner })
    }

    /// Writes `payload` and waits for the broker's acknowledgement; returns the offset.
    pub async fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        payload: &[u8],
    ) -> Result<i64, KafkaError> {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        match self.inner.send(record, Timeout::Never).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((e, _)) => Err(KafkaError::Client(e)),
        }
    }

    /// Queues `payload` without waiting for the acknowledgement (live token chunks: ordered
    /// per partition by the idempotent producer, and a lost one is only a cosmetic gap; the
    /// owner's fetch wake-up, whose loss only delays a take-over by one poll).
    pub fn send_nowait(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        if let Err((e, _)) = self.inner.send_result(record) {
            tracing::warn!(error = %e, topic, "could not queue record");
        }
    }

    /// Waits until everything queued is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        Ok(self.inner.flush(Timeout::After(timeout))?)
    }
}
