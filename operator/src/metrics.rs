//! The operator's Prometheus metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of a reconcile's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or the error kind.
    pub outcome: String,
}

/// Counters and gauges.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles by outcome.
    pub reconciles: Family<OutcomeLabel, Counter>,
    /// Reconcile durations in seconds.
    pub duration: Histogram,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Balancers running here.
    pub balancers: Gauge,
    /// Replica changes made by the autoscaler.
    pub scalings: Counter,
    /// The registry they live in.
    pub registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshchat_operator");
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let (leader, balancers, scalings) = (Gauge::default(), Gauge::default(), Counter::default());
        registry.register(
            "reconciles",
            "ChatAgent reconciles by outcome",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register("leader", "1 while this replica is the leader", leader.clone());
        registry.register(
            "balancers",
            "Balancers running in this replica",
            balancers.clone(),
        );
        registry.register(
            "scalings",
            "Replica changes made by the autoscaler",
            scalings.clone(),
        );
        Self {
            reconciles,
            duration,
            leader,
            balancers,
            scalings,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// The registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
