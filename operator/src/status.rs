//! A ChatAgent's status as a pure function of what the operator observed: its StatefulSet, its
//! balancer's report, and the previous status (conditions keep their transition times).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use meshchat_crds::{ChatAgent, ChatAgentStatus, WorkerLoadStatus};

use crate::autoscale::External;
use crate::balancer::Report;
use crate::children::selector_string;

/// Condition types, as the API conventions spell them.
pub mod kinds {
    /// Every wanted worker is ready and the balancer has assigned every partition.
    pub const READY: &str = "Ready";
    /// A rollout or a scale is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong that the operator cannot fix by itself.
    pub const DEGRADED: &str = "Degraded";
    /// The balancer reaches the ChatAgent's Kafka.
    pub const KAFKA_REACHABLE: &str = "KafkaReachable";
    /// With `spec.autoscaling` on: an HPA or a KEDA ScaledObject scales the ChatAgent, so the
    /// built-in autoscaler does not.
    pub const EXTERNAL_AUTOSCALER: &str = "ExternalAutoscaler";
}

/// What the status is computed from.
pub struct Observed<'a> {
    /// The resource.
    pub agent: &'a ChatAgent,
    /// Its StatefulSet as the API server returned it (None before it exists).
    pub stateful_set: Option<&'a StatefulSet>,
    /// Its balancer's latest report.
    pub balancer: &'a Report,
    /// `status.migrations` when this balancer started (its own count starts at 0).
    pub migrations_base: u64,
    /// Why the balancer cannot run (a named Secret cannot be read), if so.
    pub config_problem: Option<&'a str>,
    /// With `spec.autoscaling` on (Some): the cluster's autoscaler that targets the ChatAgent,
    /// if one does.
    pub autoscaler: Option<Option<&'a External>>,
    /// Now.
    pub now: Timestamp,
}

/// The status to write.
pub fn status(o: &Observed<'_>) -> ChatAgentStatus {
    let spec = &o.agent.spec;
    let name = o.agent.metadata.name.clone().unwrap_or_default();
    let generation = o.agent.metadata.generation;
    let previous = o.agent.status.clone().unwrap_or_default();
    let sts = o.stateful_set.and_then(|s| s.status.as_ref());
    let replicas = sts.map_or(0, |s| s.replicas);
    let ready = sts.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = sts.and_then(|s| s.updated_replicas).unwrap_or(0);
    let sts_current = o
        .stateful_set
        .is_some_and(|s| s.status.as_ref().and_then(|st| st.observed_generation) >= s.metadata.generation);
    let summary = &o.balancer.summary;
    let workers: Vec<WorkerLoadStatus> = summary
        .workers
        .iter()
        .map(|w| WorkerLoadStatus {
            name: w.id.clone(),
            partitions: w.partitions.clone(),
            load: round3(w.load),
        })
        .collect();
    let lost: Vec<&str> = summary
        .workers
        .iter()
        .filter(|w| !w.alive && !w.partitions.is_empty())
        .map(|w| w.id.as_str())
        .collect();
    let assigned: usize = summary.workers.iter().map(|w| w.partitions.len()).sum();
    let all_assigned = assigned >= usize::try_from(spec.kafka.partitions).unwrap_or(0);

    let mut conditions = Vec::new();
    let mut set = |kind: &str, ok: Option<bool>, reason: &str, message: String| {
        let status = match ok {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        };
        let before = previous.conditions.iter().find(|c| c.type_ == kind);
        let since = match before {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(o.now),
        };
        conditions.push(Condition {
            type_: kind.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        });
    };

    let (ok, reason, msg) = match (spec.replicas, ready >= spec.replicas, all_assigned) {
        (0, _, _) => (false, "ScaledToZero", "spec.replicas is 0".to_string()),
        (_, false, _) => (
            false,
            "WorkersNotReady",
            format!("{ready}/{} workers ready", spec.replicas),
        ),
        (_, true, false) => (
            false,
            "PartitionsUnassigned",
            format!(
                "{assigned}/{} partitions assigned by the balancer",
                spec.kafka.partitions
            ),
        ),
        (_, true, true) => (
            true,
            "AllWorkersReady",
            format!("{ready} workers ready, {assigned} partitions assigned"),
        ),
    };
    set(kinds::READY, Some(ok), reason, msg);

    let rolling = !sts_current || updated < spec.replicas || replicas != spec.replicas;
    let (reason, msg) = if o.stateful_set.is_none() {
        ("Creating", "creating the workers".to_string())
    } else if replicas != spec.replicas {
        ("Scaling", format!("{replicas} workers, {} wanted", spec.replicas))
    } else if rolling {
        (
            "RollingOut",
            format!("{updated}/{} workers updated", spec.replicas),
        )
    } else {
        ("Stable", "every worker runs the current spec".to_string())
    };
    set(kinds::PROGRESSING, Some(rolling), reason, msg);

    let kafka = o.balancer.kafka_reachable;
    let (bad, reason, msg) = if let Some(problem) = o.config_problem {
        (true, "SecretUnavailable", problem.to_string())
    } else if kafka == Some(false) {
        (
            true,
            "KafkaUnreachable",
            format!("no broker of {} answers", spec.kafka.bootstrap_servers),
        )
    } else if let Some(n) = o
        .balancer
        .brokers
        .filter(|n| i32::try_from(*n).unwrap_or(i32::MAX) < spec.kafka.replication_factor)
    {
        (
            true,
            "TooFewBrokers",
            format!(
                "spec.kafka.replicationFactor is {} but the Kafka cluster has {n} broker{}: topics \
                 cannot be created with that many replicas; lower replicationFactor (and \
                 minInsyncReplicas) or add brokers",
                spec.kafka.replication_factor,
                if n == 1 { "" } else { "s" }
            ),
        )
    } else if !lost.is_empty() {
        (
            true,
            "WorkerLost",
            format!("workers without heartbeats own partitions: {}", lost.join(", ")),
        )
    } else {
        (false, "AsExpected", "no problem seen".to_string())
    };
    set(kinds::DEGRADED, Some(bad), reason, msg);

    let (reason, msg) = match (kafka, o.balancer.waiting_for_topics) {
        (Some(true), true) => (
            "WaitingForTopics",
            "the workers have not created the topics yet".to_string(),
        ),
        (Some(true), false) => ("Connected", format!("reached {}", spec.kafka.bootstrap_servers)),
        (Some(false), _) => (
            "Unreachable",
            format!("no broker of {} answers", spec.kafka.bootstrap_servers),
        ),
        (None, _) => ("Unknown", "the balancer has not connected yet".to_string()),
    };
    set(kinds::KAFKA_REACHABLE, kafka, reason, msg);

    match o.autoscaler {
        Some(Some(e)) => set(kinds::EXTERNAL_AUTOSCALER, Some(true), &e.kind, e.describe()),
        Some(None) => set(
            kinds::EXTERNAL_AUTOSCALER,
            Some(false),
            "BuiltIn",
            "no HPA or ScaledObject targets this ChatAgent: spec.autoscaling scales it".to_string(),
        ),
        None => {}
    }

    ChatAgentStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        selector: Some(selector_string(&name)),
        assignment_generation: summary.generation,
        load: summary.mean_load().map(round3),
        workers,
        last_rebalance_time: summary
            .last_rebalance_ms
            .and_then(|ms| Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok())
            .map(|t| t.to_string())
            .or(previous.last_rebalance_time),
        migrations: o.migrations_base + summary.migrations,
        conditions,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
