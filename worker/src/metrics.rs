//! Prometheus metrics of one worker.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::load::LoadGauges;

/// Label of replies by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Label of token counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

/// Label of per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Partition of chat.messages.
    pub partition: i32,
}

/// Labels of one kind of HTTP response.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// The route as declared (`/api/chat/conversation/{id}`), `unmatched` for none.
    pub route: String,
    /// GET, POST, DELETE, OPTIONS, HEAD, or `other`.
    pub method: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels of a route's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route as declared.
    pub route: String,
}

/// The public HTTP API's requests, by route and outcome.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Responses by route, method and status.
    pub requests: Family<HttpLabel, Counter>,
    /// Time to the response's head by route (a stream's head comes when it opens).
    pub duration: Family<RouteLabel, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
        }
    }
}

/// All metrics; cheap to clone (handles share state).
#[derive(Clone)]
pub struct Metrics {
    /// User messages accepted by `POST /api/chat/send`.
    pub messages_in: Counter,
    /// User messages consumed by the owner.
    pub messages_handled: Counter,
    /// Replies produced, by outcome.
    pub replies: Family<OutcomeLabel, Counter>,
    /// From the user message's acceptance to its reply's acknowledgement.
    pub send_to_reply: Histogram,
    /// One LLM call (all attempts).
    pub llm_latency: Histogram,
    /// LLM tokens, prompt and completion.
    pub llm_tokens: Family<KindLabel, Counter>,
    /// LLM calls in flight.
    pub llm_in_flight: Gauge,
    /// Answers waiting for an LLM slot.
    pub llm_queued: Gauge,
    /// Smoothed load factor (LLM slots in use plus backlog, in limits): the autoscaling signal.
    pub load_factor: Gauge<f64, AtomicU64>,
    /// Partitions of chat.messages this worker owns.
    pub owned_partitions: Gauge,
    /// LLM attempts that failed (and were retried or gave up).
    pub llm_failures: Counter,
    /// Records behind the high watermark per owned partition.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Live streams (WebSocket, SSE) open.
    pub live_streams: Gauge,
    /// Partitions this worker's live fan-out reads (those its subscribers watch).
    pub live_partitions: Gauge,
    /// Conversations held in memory.
    pub conversations_resident: Gauge,
    /// Conversations of held partitions evicted from memory (they come back on use).
    pub conversations_evicted: Gauge,
    /// Kafka producers replaced by fresh ones after a record timed out.
    pub producer_replacements: Gauge,
    /// Partitions taken over here: from the assignment to serving (the pause its conversations
    /// saw; a planned handoff's includes the old owner's release).
    pub handoff_pause: Histogram,
    /// Partitions handed over to another worker (released).
    pub partitions_released: Counter,
    /// The public API's requests.
    pub http: HttpMetrics,
}

// === impl Metrics ===

impl Metrics {
    /// Creates the metrics and registers them under `meshchat_`.
    pub fn new() -> (Self, Registry) {
        let m = Self {
            messages_in: Counter::default(),
            messages_handled: Counter::default(),
            replies: Family::default(),
            send_to_reply: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            llm_latency: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            llm_tokens: Family::default(),
            llm_in_flight: Gauge::default(),
            llm_queued: Gauge::default(),
            load_factor: Gauge::default(),
            owned_partitions: Gauge::default(),
            llm_failures: Counter::default(),
            consumer_lag: Family::default(),
            live_streams: Gauge::default(),
            live_partitions: Gauge::default(),
            conversations_resident: Gauge::default(),
            conversations_evicted: Gauge::default(),
            producer_replacements: Gauge::default(),
            handoff_pause: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            partitions_released: Counter::default(),
            http: HttpMetrics::default(),
        };
        let mut r = Registry::with_prefix("meshchat");
        r.register(
            "messages_in",
            "User messages accepted over HTTP",
            m.messages_in.clone(),
        );
        r.register(
            "messages_handled",
            "User messages consumed by their owner",
            m.messages_handled.clone(),
        );
        r.register("replies", "Replies produced, by outcome", m.replies.clone());
        r.register(
            "send_to_reply_seconds",
            "Acceptance of a user message to its reply's ack",
            m.send_to_reply.clone(),
        );
        r.register(
            "llm_latency_seconds",
            "LLM call time, all attempts",
            m.llm_latency.clone(),
        );
        r.register("llm_tokens", "LLM tokens by kind", m.llm_tokens.clone());
        r.register("llm_in_flight", "LLM calls in flight", m.llm_in_flight.clone());
        r.register(
            "llm_queued",
            "Answers waiting for an LLM slot",
            m.llm_queued.clone(),
        );
        r.register(
            "load_factor",
            "Smoothed load: LLM slots in use plus answers queued, over the concurrency limit (1 = full)",
            m.load_factor.clone(),
        );
        r.register(
            "owned_partitions",
            "Partitions of chat.messages this worker owns",
            m.owned_partitions.clone(),
        );
        r.register("llm_failures", "Failed LLM attempts", m.llm_failures.clone());
        r.register(
            "live_streams",
            "Live streams (WebSocket, SSE) open",
            m.live_streams.clone(),
        );
        r.register(
            "live_partitions",
            "Partitions the live fan-out reads (those its own and relayed subscribers watch)",
            m.live_partitions.clone(),
        );
        r.register(
            "conversations_resident",
            "Conversations held in memory",
            m.conversations_resident.clone(),
        );
        r.register(
            "conversations_evicted",
            "Conversations of held partitions evicted from memory",
            m.conversations_evicted.clone(),
        );
        r.register(
            "handoff_pause_seconds",
            "Partitions taken over: from the assignment here to serving",
            m.handoff_pause.clone(),
        );
        r.register(
            "partitions_released",
            "Partitions handed over to another worker",
            m.partitions_released.clone(),
        );
        r.register(
            "kafka_producer_replacements",
            "Kafka producers replaced by fresh ones after a record timed out",
            m.producer_replacements.clone(),
        );
        r.register(
            "http_requests",
            "Public API responses by route, method and status",
            m.http.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Public API time to the response's head, by route",
            m.http.duration.clone(),
        );
        r.register(
            "consumer_lag",
            "Records behind the high watermark, per owned partition",
            m.consumer_lag.clone(),
        );
        (m, r)
    }

    /// The gauges the load tracker keeps current.
    pub fn load_gauges(&self) -> LoadGauges {
        LoadGauges {
            queued: self.llm_queued.clone(),
            running: self.llm_in_flight.clone(),
            load_factor: self.load_factor.clone(),
            owned_partitions: self.owned_partitions.clone(),
        }
    }
}
