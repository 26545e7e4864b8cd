//! A ChatAgent's status as a pure function of what the operator observed: its StatefulSet, its
//! balancer's report, and the previous status (conditions keep their transition times).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use meshchat_crds::{ChatAgent, ChatAgentStatus, WorkerLoadStatus};

use crate::autoscale::Lookup;
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
    /// `chat.messages` has at least `spec.kafka.replicationFactor` replicas per partition
    /// (topics keep the factor they were created with).
    pub const TOPICS_REPLICATED: &str = "TopicsReplicated";
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
    /// With `spec.autoscaling` on (Some): whether an autoscaler of the cluster's targets the
    /// ChatAgent.
    pub autoscaler: Option<&'a Lookup>,
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
    // the topic's count once it exists: a ChatAgent whose spec grew under an operator that let
    // it (0.1.0) has fewer partitions than its spec says, and always will
    let cluster = o.balancer.cluster.as_ref();
    let partitions = cluster
        .and_then(|c| c.partitions)
        .unwrap_or(spec.kafka.partitions);
    let all_assigned = assigned >= usize::try_from(partitions).unwrap_or(0);

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
            format!("{assigned}/{partitions} partitions assigned by the balancer"),
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
    let brokers = &spec.kafka.bootstrap_servers;
    // librdkafka's reason, when it gave one (a refused login, say)
    let unreachable = match &o.balancer.kafka_refusal {
        Some(why) => format!("no broker of {brokers} answers: {why}"),
        None => format!("no broker of {brokers} answers"),
    };
    let (bad, reason, msg) = if let Some(problem) = o.config_problem {
        (true, "SecretUnavailable", problem.to_string())
    } else if kafka == Some(false) {
        (true, "KafkaUnreachable", unreachable.clone())
    } else if !lost.is_empty() {
        (
            true,
            "WorkerLost",
            format!("workers without heartbeats own partitions: {}", lost.join(", ")),
        )
    } else if let Some(n) = cluster.map(|c| c.brokers).filter(|n| {
        o.balancer.waiting_for_topics && i32::try_from(*n).unwrap_or(i32::MAX) < spec.kafka.replication_factor
    }) {
        // only while the topics are missing: that is when the factor is used
        (
            true,
            "TooFewBrokers",
            format!(
                "the workers cannot create the topics: spec.kafka.replicationFactor is {} but {n} \
                 broker{} answer{}; lower replicationFactor (and minInsyncReplicas) or add brokers",
                spec.kafka.replication_factor,
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
            ),
        )
    } else if let Some(actual) = cluster
        .and_then(|c| c.partitions)
        .filter(|p| *p != spec.kafka.partitions)
    {
        (
            true,
            "PartitionsMismatch",
            format!(
                "chat.messages has {actual} partitions but spec.kafka.partitions is {}: topics keep \
                 their count and conversations are placed by it, so the mesh runs on {actual}",
                spec.kafka.partitions
            ),
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
        (Some(false), _) => ("Unreachable", unreachable),
        (None, _) => ("Unknown", "the balancer has not connected yet".to_string()),
    };
    set(kinds::KAFKA_REACHABLE, kafka, reason, msg);

    let rf = spec.kafka.replication_factor;
    let (ok, reason, msg) = match cluster.and_then(|c| c.replicas) {
        Some(r) if i32::try_from(r).unwrap_or(i32::MAX) >= rf => (
            Some(true),
            "AsSpecified",
            format!("chat.messages has {r} replicas per partition (replicationFactor {rf})"),
        ),
        Some(r) => (
            Some(false),
            "UnderReplicated",
            format!(
                "chat.messages has {r} replica{} per partition but spec.kafka.replicationFactor is \
                 {rf}: topics keep the factor they were created with; raise it with Kafka's \
                 kafka-reassign-partitions (and min.insync.replicas with kafka-configs)",
                if r == 1 { "" } else { "s" }
            ),
        ),
        None => (None, "Unknown", "the topics have not been seen yet".to_string()),
    };
    set(kinds::TOPICS_REPLICATED, ok, reason, msg);

    match o.autoscaler {
        Some(Lookup::Found(e)) => set(kinds::EXTERNAL_AUTOSCALER, Some(true), &e.kind, e.describe()),
        Some(Lookup::Unknown(why)) => set(kinds::EXTERNAL_AUTOSCALER, None, "CannotTell", why.clone()),
        Some(Lookup::NoneFound) => set(
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
