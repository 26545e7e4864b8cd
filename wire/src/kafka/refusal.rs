//! Why a cluster cannot be used, in librdkafka's words. A refused login (SASL credentials, a TLS
//! certificate) reaches only a client that polls its main queue — not the admin client that
//! creates the topics, whose requests just time out — so a worker that cannot start asks a
//! polled client what it heard.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;

use super::{group, manual_consumer};

/// What a client connecting with `cfg` hears within about `wait` when the cluster refuses it
/// or cannot be reached (`None`: nothing went wrong, or it could not even be created).
/// Blocking: call off the runtime.
pub fn refusal(cfg: &ClientConfig, wait: Duration) -> Option<String> {
    let consumer: BaseConsumer<Heard> = manual_consumer(cfg, group::METADATA)
        .create_with_context(Heard::default())
        .ok()?;
    // a metadata request makes it connect; what goes wrong arrives as error events
    let _ = consumer.fetch_metadata(None, wait);
    for _ in 0..5 {
        if let Some(why) = consumer.context().said() {
            return Some(why);
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer.context().said()
}

/// The errors a client reported: the first specific one, else the first at all ("all brokers
/// down" says less than the connection's own failure).
#[derive(Default)]
struct Heard {
    specific: Mutex<Option<String>>,
    general: Mutex<Option<String>>,
}

impl Heard {
    fn said(&self) -> Option<String> {
        let specific = self
            .specific
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        specific.or_else(|| {
            self.general
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

impl ClientContext for Heard {
    fn error(&self, error: RdError, reason: &str) {
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        // "… (after 311ms in state AUTH_REQ)": the same refusal reads the same each time
        let text = match text.rfind(" (after ") {
            Some(at) if text.ends_with(')') => text[..at].to_string(),
            _ => text,
        };
        let slot = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => &self.general,
            _ => &self.specific,
        };
        slot.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(text);
    }
}

impl ConsumerContext for Heard {}
