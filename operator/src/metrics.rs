//! The operator's Prometheus metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use meshchat_crds::ChatAgentStatus;

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

/// One ChatAgent's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AgentLabel {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub chatagent: String,
}

/// One status condition of one ChatAgent (as kube-state-metrics shows conditions: every
/// status is a series, 1 for the current one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ConditionLabel {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub chatagent: String,
    /// Condition type (`Ready`, `Degraded`...).
    pub condition: String,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
}

const STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// Per-ChatAgent gauges, written by the leader's reconciles from the status it computes.
#[derive(Clone, Default)]
pub struct AgentMetrics {
    /// Mean load factor of its live workers.
    pub load: Family<AgentLabel, Gauge<f64, AtomicU64>>,
    /// Partitions the assignment gives to no worker (a dead owner shows as Degraded).
    pub unassigned: Family<AgentLabel, Gauge>,
    /// Replicas the spec asks for (what `/scale` and autoscalers set).
    pub desired: Family<AgentLabel, Gauge>,
    /// Worker pods ready.
    pub ready: Family<AgentLabel, Gauge>,
    /// Partition moves made by its balancers, ever.
    pub migrations: Family<AgentLabel, Gauge>,
    /// Status conditions.
    pub conditions: Family<ConditionLabel, Gauge>,
    /// Condition types exported per ChatAgent (to remove them all when it goes).
    seen: Arc<Mutex<BTreeMap<AgentLabel, BTreeSet<String>>>>,
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
    /// Per-ChatAgent gauges.
    pub agents: AgentMetrics,
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
        let agents = AgentMetrics::default();
        let a = &agents;
        registry.register(
            "chatagent_load",
            "Mean load factor of a ChatAgent's live workers (1 = every LLM slot busy)",
            a.load.clone(),
        );
        registry.register(
            "chatagent_unassigned_partitions",
            "Partitions of a ChatAgent that the assignment gives to no worker",
            a.unassigned.clone(),
        );
        registry.register(
            "chatagent_replicas_desired",
            "Workers a ChatAgent's spec asks for",
            a.desired.clone(),
        );
        registry.register(
            "chatagent_replicas_ready",
            "Worker pods of a ChatAgent that are ready",
            a.ready.clone(),
        );
        registry.register(
            "chatagent_migrations",
            "Partition moves made by a ChatAgent's balancers, ever",
            a.migrations.clone(),
        );
        registry.register(
            "chatagent_condition",
            "A ChatAgent's status conditions: 1 for the current status of each type",
            a.conditions.clone(),
        );
        Self {
            reconciles,
            duration,
            leader,
            balancers,
            scalings,
            agents,
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

// === impl AgentMetrics ===

impl AgentMetrics {
    /// Sets a ChatAgent's series from the status just computed.
    pub fn observe(
        &self,
        namespace: &str,
        name: &str,
        partitions: i32,
        desired: i32,
        status: &ChatAgentStatus,
    ) {
        let label = AgentLabel {
            namespace: namespace.to_string(),
            chatagent: name.to_string(),
        };
        let owned: usize = status.workers.iter().map(|w| w.partitions.len()).sum();
        let unassigned = usize::try_from(partitions).unwrap_or(0).saturating_sub(owned);
        self.load.get_or_create(&label).set(status.load.unwrap_or(0.0));
        self.unassigned
            .get_or_create(&label)
            .set(i64::try_from(unassigned).unwrap_or(i64::MAX));
        self.desired.get_or_create(&label).set(i64::from(desired));
        self.ready
            .get_or_create(&label)
            .set(i64::from(status.ready_replicas));
        self.migrations
            .get_or_create(&label)
            .set(i64::try_from(status.migrations).unwrap_or(i64::MAX));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let types = seen.entry(label).or_default();
        for c in &status.conditions {
            types.insert(c.type_.clone());
            for s in STATUSES {
                let l = ConditionLabel {
                    namespace: namespace.to_string(),
                    chatagent: name.to_string(),
                    condition: c.type_.clone(),
                    status: s,
                };
                self.conditions.get_or_create(&l).set(i64::from(c.status == s));
            }
        }
    }

    /// Drops the series of ChatAgents not in `keep` (`namespace/name` keys): deleted ones, or
    /// all of them when this replica stops leading.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|label, types| {
            if keep.contains(&format!("{}/{}", label.namespace, label.chatagent)) {
                return true;
            }
            self.load.remove(label);
            self.unassigned.remove(label);
            self.desired.remove(label);
            self.ready.remove(label);
            self.migrations.remove(label);
            for t in types.iter() {
                for s in STATUSES {
                    self.conditions.remove(&ConditionLabel {
                        namespace: label.namespace.clone(),
                        chatagent: label.chatagent.clone(),
                        condition: t.clone(),
                        status: s,
                    });
                }
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use meshchat_crds::WorkerLoadStatus;

    use super::*;

    fn condition(kind: &str, status: &str) -> Condition {
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn a_chatagents_series_follow_its_status_and_go_with_it() {
        let m = Metrics::default();
        let mut status = ChatAgentStatus {
            ready_replicas: 2,
            load: Some(0.25),
            migrations: 7,
            workers: vec![WorkerLoadStatus {
                name: "w-0".into(),
                partitions: vec![0, 1, 2],
                load: 0.25,
            }],
            conditions: vec![condition("Ready", "False"), condition("Degraded", "True")],
            ..Default::default()
        };
        m.agents.observe("ns", "support", 8, 3, &status);
        let text = m.encode();
        let ready =
            r#"meshchat_operator_chatagent_condition{namespace="ns",chatagent="support",condition="Ready""#;
        assert_eq!(line(&text, ready).len(), 3, "{text}");
        assert!(text.contains(&format!("{ready},status=\"False\"}} 1")), "{text}");
        assert!(text.contains(&format!("{ready},status=\"True\"}} 0")), "{text}");
        assert!(text.contains(
            r#"meshchat_operator_chatagent_unassigned_partitions{namespace="ns",chatagent="support"} 5"#
        ));
        assert!(
            text.contains(r#"meshchat_operator_chatagent_load{namespace="ns",chatagent="support"} 0.25"#)
        );
        assert!(text.contains(
            r#"meshchat_operator_chatagent_replicas_desired{namespace="ns",chatagent="support"} 3"#
        ));

        // the condition turns: the old status reads 0, no stale 1 is left
        status.conditions = vec![condition("Ready", "True")];
        m.agents.observe("ns", "support", 8, 3, &status);
        let text = m.encode();
        assert!(text.contains(&format!("{ready},status=\"True\"}} 1")), "{text}");
        assert!(text.contains(&format!("{ready},status=\"False\"}} 0")), "{text}");

        m.agents.observe("other", "sales", 4, 1, &status);
        m.agents.retain(&BTreeSet::from(["other/sales".to_string()]));
        let text = m.encode();
        assert!(!text.contains(r#"chatagent="support""#), "{text}");
        assert!(text.contains(r#"chatagent="sales""#), "{text}");
    }
}
