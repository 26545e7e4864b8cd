//! The idempotent producer every write goes through, and its replacement when it wedges.
//!
//! librdkafka (2.12 to 2.15 at least) can leave a partition without a usable leader for good:
//! a produce answered "not leader, leader unknown" while a single broker is fenced (it woke from
//! a stall longer than its session timeout) is recorded and never cleared by later metadata, so
//! every record for that partition times out while the cluster itself is fine
//! (confluentinc/librdkafka#5430). A fresh client has no such state; so a producer whose record
//! timed out is replaced, at most once per generation, and the old one is left to finish (or
//! time out) what it holds.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::KafkaError;

/// How long a record may wait for its acknowledgement unless the client settings say otherwise.
const MESSAGE_TIMEOUT_MS: &str = "30000";

/// Idempotent, acks=all producer. Records are sent with an explicit partition computed with
/// Kafka's murmur2 so Java producers and MeshChat agree on placement. Clones share one client.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    /// The settings each generation is created from.
    config: ClientConfig,
    /// Upper bound on the old generation's unfinished records, for its farewell flush.
    message_timeout: Duration,
    current: RwLock<Generation>,
}

#[derive(Clone)]
struct Generation {
    producer: FutureProducer,
    /// Counts replacements: 0 for the first client.
    number: u64,
}

// === impl Producer ===

impl Producer {
    /// Creates the producer. `message.timeout.ms` in `base` (client properties) is kept.
    pub fn new(base: &ClientConfig) -> Result<Self, KafkaError> {
        let mut config = base.clone();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random");
        if config.get("message.timeout.ms").is_none() {
            config.set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
        }
        let message_timeout = config
            .get("message.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_secs(30), Duration::from_millis);
        let producer = config.create()?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                message_timeout,
                current: RwLock::new(Generation { producer, number: 0 }),
            }),
        })
    }

    fn current(&self) -> Generation {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the client was replaced after a record timed out.
    pub fn replacements(&self) -> u64 {
        self.current().number
    }

    /// Writes `payload` and waits for the broker's acknowledgement; returns the offset.
    pub async fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        payload: &[u8],
    ) -> Result<i64, KafkaError> {
        self.send_with(topic, partition, key, payload, None).await
    }

    /// Like [`Producer::send`], with record headers (a trace context, say).
    pub async fn send_with(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<i64, KafkaError> {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        let record = match headers {
            Some(h) => record.headers(h),
            None => record,
        };
        self.deliver(record).await
    }

    /// Writes a tombstone (no value: a compacted topic forgets `key`); returns the offset.
    pub async fn send_tombstone(&self, topic: &str, partition: i32, key: &str) -> Result<i64, KafkaError> {
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).partition(partition).key(key);
        self.deliver(record).await
    }

    async fn deliver(&self, record: FutureRecord<'_, str, [u8]>) -> Result<i64, KafkaError> {
        let generation = self.current();
        match generation.producer.send(record, Timeout::Never).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((e, _)) => {
                if timed_out(&e) {
                    self.replace(generation.number);
                }
                Err(KafkaError::Client(e))
            }
        }
    }

    /// Replaces generation `number` with a fresh client, unless that was done already. If the
    /// cluster is really away, the new one waits for it like the old one would have.
    fn replace(&self, number: u64) {
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.number != number {
            return;
        }
        let producer = match self.shared.config.create::<FutureProducer>() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not create a fresh Kafka producer; keeping the old one");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *current,
            Generation {
                producer,
                number: number + 1,
            },
        );
        drop(current);
        tracing::warn!(
            generation = number + 1,
            "a record timed out: the Kafka producer was replaced by a fresh one"
        );
        // what the old client holds is delivered or times out; dropping it earlier would purge
        // records that may be on their way; a thread, as flush blocks
        let wait = self.shared.message_timeout + Duration::from_secs(5);
        let spawned = std::thread::Builder::new()
            .name("producer-farewell".into())
            .spawn(move || {
                let _ = old.producer.flush(Timeout::After(wait));
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the old producer's flush");
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
        if let Err((e, _)) = self.current().producer.send_result(record) {
            tracing::warn!(error = %e, topic, "could not queue record");
        }
    }

    /// Waits until everything queued is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        Ok(self.current().producer.flush(Timeout::After(timeout))?)
    }
}

/// A record that waited its whole `message.timeout.ms` without an acknowledgement.
fn timed_out(e: &RdError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut)
}
