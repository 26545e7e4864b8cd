use super::*;
use crate::autoscale::External;
use crate::balancer::{Summary, WorkerSummary};
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use meshchat_crds::ChatAgentSpec;

fn agent(replicas: i32) -> ChatAgent {
    let mut spec: ChatAgentSpec = serde_json::from_str("{}").expect("defaults");
    spec.replicas = replicas;
    spec.kafka.partitions = 4;
    let mut a = ChatAgent::new("support", spec);
    a.metadata.namespace = Some("team-a".into());
    a.metadata.generation = Some(3);
    a
}

fn sts(replicas: i32, ready: i32, updated: i32) -> StatefulSet {
    let mut s = StatefulSet::default();
    s.metadata.generation = Some(2);
    s.status = Some(StatefulSetStatus {
        replicas,
        ready_replicas: Some(ready),
        updated_replicas: Some(updated),
        observed_generation: Some(2),
        ..StatefulSetStatus::default()
    });
    s
}

fn worker(id: &str, partitions: &[i32], load: f64, alive: bool) -> WorkerSummary {
    WorkerSummary {
        id: id.into(),
        partitions: partitions.to_vec(),
        load,
        alive,
        draining: false,
    }
}

fn healthy() -> Report {
    Report {
        kafka_reachable: Some(true),
        kafka_refusal: None,
        cluster: Some(meshchat_wire::kafka::ClusterView {
            brokers: 3,
            partitions: Some(4),
            replicas: Some(3),
        }),
        waiting_for_topics: false,
        summary: Summary {
            generation: 7,
            workers: vec![
                worker("support-0", &[0, 1], 0.5, true),
                worker("support-1", &[2, 3], 0.3, true),
            ],
            migrations: 2,
            last_rebalance_ms: Some(1_700_000_000_000),
        },
    }
}

fn cond<'a>(s: &'a ChatAgentStatus, kind: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == kind).expect("condition")
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("time")
}

fn observe(
    agent: &ChatAgent,
    sts: Option<&StatefulSet>,
    report: &Report,
    base: u64,
    secs: i64,
) -> ChatAgentStatus {
    status(&Observed {
        agent,
        stateful_set: sts,
        balancer: report,
        migrations_base: base,
        config_problem: None,
        autoscaler: None,
        now: at(secs),
    })
}

#[test]
fn a_settled_mesh_is_ready_and_not_progressing() {
    let a = agent(2);
    let s = sts(2, 2, 2);
    let r = healthy();
    let st = observe(&a, Some(&s), &r, 5, 100);
    assert_eq!((st.replicas, st.ready_replicas), (2, 2));
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/instance=support,app.kubernetes.io/name=meshchat-worker")
    );
    assert_eq!(st.assignment_generation, 7);
    assert_eq!(st.load, Some(0.4));
    assert_eq!(st.migrations, 7);
    assert_eq!(st.workers.len(), 2);
    assert_eq!(st.last_rebalance_time.as_deref(), Some("2023-11-14T22:13:20Z"));
    let kinds: Vec<_> = st
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Ready", "True", "AllWorkersReady"),
            ("Progressing", "False", "Stable"),
            ("Degraded", "False", "AsExpected"),
            ("KafkaReachable", "True", "Connected"),
            ("TopicsReplicated", "True", "AsSpecified"),
        ]
    );
    assert!(st.conditions.iter().all(|c| c.observed_generation == Some(3)));
}

#[test]
fn scaling_and_unready_workers_show_as_progressing_and_not_ready() {
    let a = agent(5);
    let s = sts(2, 2, 2);
    let r = healthy();
    let st = observe(&a, Some(&s), &r, 0, 100);
    assert_eq!(cond(&st, "Ready").reason, "WorkersNotReady");
    assert_eq!(cond(&st, "Ready").message, "2/5 workers ready");
    assert_eq!(
        (
            cond(&st, "Progressing").status.as_str(),
            cond(&st, "Progressing").reason.as_str()
        ),
        ("True", "Scaling")
    );
    let none = observe(&a, None, &r, 0, 100);
    assert_eq!(cond(&none, "Progressing").reason, "Creating");
    let zero = agent(0);
    let st = observe(&zero, Some(&sts(0, 0, 0)), &r, 0, 100);
    assert_eq!(cond(&st, "Ready").reason, "ScaledToZero");
}

#[test]
fn a_lost_worker_or_kafka_degrades_the_mesh() {
    let a = agent(2);
    let s = sts(2, 2, 2);
    let mut r = healthy();
    r.summary.workers[1].alive = false;
    let st = observe(&a, Some(&s), &r, 0, 100);
    assert_eq!(
        (
            cond(&st, "Degraded").status.as_str(),
            cond(&st, "Degraded").reason.as_str()
        ),
        ("True", "WorkerLost")
    );
    assert!(cond(&st, "Degraded").message.contains("support-1"));
    assert_eq!(st.load, Some(0.5), "load averages live workers only");
    r.kafka_reachable = Some(false);
    let st = observe(&a, Some(&s), &r, 0, 100);
    assert_eq!(cond(&st, "Degraded").reason, "KafkaUnreachable");
    assert_eq!(cond(&st, "KafkaReachable").status, "False");
    // librdkafka's reason, when it gave one, is in the message
    r.kafka_refusal = Some("SASL authentication error: invalid credentials".into());
    let st = observe(&a, Some(&s), &r, 0, 100);
    assert!(
        cond(&st, "Degraded")
            .message
            .ends_with("answers: SASL authentication error: invalid credentials"),
        "{}",
        cond(&st, "Degraded").message
    );
    let unknown = Report::default();
    let st = observe(&a, Some(&s), &unknown, 0, 100);
    assert_eq!(cond(&st, "KafkaReachable").status, "Unknown");
    assert_eq!(cond(&st, "Ready").reason, "PartitionsUnassigned");
}

#[test]
fn transition_times_move_only_when_a_condition_flips() {
    let mut a = agent(2);
    let s = sts(2, 2, 2);
    let r = healthy();
    let first = observe(&a, Some(&s), &r, 0, 100);
    a.status = Some(first);
    let unready = sts(2, 1, 2);
    let second = observe(&a, Some(&unready), &r, 0, 200);
    assert_eq!(
        cond(&second, "Ready").last_transition_time,
        Time(at(200)),
        "flipped"
    );
    assert_eq!(
        cond(&second, "Degraded").last_transition_time,
        Time(at(100)),
        "unchanged"
    );
}

#[test]
fn an_unreadable_secret_degrades_and_stays_put_across_reconciles() {
    let mut a = agent(2);
    let s = sts(2, 2, 2);
    let r = Report::default();
    let problem = Some("Secret kafka-user not found");
    let seen = |a: &ChatAgent, secs| {
        status(&Observed {
            agent: a,
            stateful_set: Some(&s),
            balancer: &r,
            migrations_base: 0,
            config_problem: problem,
            autoscaler: None,
            now: at(secs),
        })
    };
    let first = seen(&a, 100);
    let d = cond(&first, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "SecretUnavailable")
    );
    assert_eq!(d.message, "Secret kafka-user not found");
    a.status = Some(first.clone());
    // the next reconcile computes the same status: nothing to write
    assert_eq!(seen(&a, 105), first);
}

#[test]
fn an_external_autoscaler_shows_as_a_condition_only_with_autoscaling_on() {
    let (a, s, r) = (agent(2), sts(2, 2, 2), healthy());
    let seen = |autoscaler| {
        status(&Observed {
            agent: &a,
            stateful_set: Some(&s),
            balancer: &r,
            migrations_base: 0,
            config_problem: None,
            autoscaler,
            now: at(100),
        })
    };
    assert!(
        !seen(None)
            .conditions
            .iter()
            .any(|c| c.type_ == "ExternalAutoscaler"),
        "autoscaling off: nothing to say"
    );
    let builtin = seen(Some(&Lookup::NoneFound));
    let c = cond(&builtin, "ExternalAutoscaler");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "BuiltIn"));
    let hpa = Lookup::Found(External {
        kind: "HorizontalPodAutoscaler".into(),
        name: "support".into(),
    });
    let yielded = seen(Some(&hpa));
    let c = cond(&yielded, "ExternalAutoscaler");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "HorizontalPodAutoscaler")
    );
    assert!(
        c.message.contains("spec.autoscaling is not applied"),
        "{}",
        c.message
    );
}

#[test]
fn too_few_brokers_matters_while_the_topics_are_missing_and_old_topics_show_their_factor() {
    use meshchat_wire::kafka::ClusterView;
    let (a, s) = (agent(2), sts(2, 2, 2));
    let mut r = healthy();
    r.waiting_for_topics = true;
    r.cluster = Some(ClusterView {
        brokers: 1,
        partitions: None,
        replicas: None,
    });
    let st = observe(&a, Some(&s), &r, 0, 100);
    let d = cond(&st, "Degraded");
    assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "TooFewBrokers"));
    assert!(
        d.message.starts_with(
            "the workers cannot create the topics: spec.kafka.replicationFactor is 3 but 1 broker answers"
        ),
        "{}",
        d.message
    );
    assert_eq!(cond(&st, "TopicsReplicated").status, "Unknown");
    let mut single = agent(2);
    single.spec.kafka.replication_factor = 1;
    single.spec.kafka.min_insync_replicas = 1;
    let st = observe(&single, Some(&s), &r, 0, 100);
    assert_eq!(
        cond(&st, "Degraded").reason,
        "AsExpected",
        "a one-broker cluster for RF 1"
    );

    // topics made with one replica (by 0.1.0's workers) on a cluster that now has 3 brokers, or
    // with one of 3 brokers down: not Degraded, and the factor they really have is said
    r.waiting_for_topics = false;
    for brokers in [1, 3] {
        r.cluster = Some(ClusterView {
            brokers,
            partitions: Some(4),
            replicas: Some(1),
        });
        let st = observe(&a, Some(&s), &r, 0, 100);
        assert_eq!(cond(&st, "Degraded").reason, "AsExpected");
        let t = cond(&st, "TopicsReplicated");
        assert_eq!(
            (t.status.as_str(), t.reason.as_str()),
            ("False", "UnderReplicated")
        );
        assert!(
            t.message.starts_with(
                "chat.messages has 1 replica per partition but spec.kafka.replicationFactor is 3"
            ),
            "{}",
            t.message
        );
    }
    // a lost worker is said before anything about the cluster
    r.waiting_for_topics = true;
    r.cluster = Some(ClusterView {
        brokers: 1,
        partitions: None,
        replicas: None,
    });
    r.summary.workers[0].alive = false;
    let st = observe(&a, Some(&s), &r, 0, 100);
    assert_eq!(cond(&st, "Degraded").reason, "WorkerLost");
}

#[test]
fn the_topic_s_partition_count_is_what_the_mesh_runs_on() {
    use meshchat_wire::kafka::ClusterView;
    let (mut a, s) = (agent(2), sts(2, 2, 2));
    // grown under 0.1.0, which let the spec grow and never the topic
    a.spec.kafka.partitions = 8;
    let mut r = healthy();
    r.cluster = Some(ClusterView {
        brokers: 3,
        partitions: Some(4),
        replicas: Some(3),
    });
    let st = observe(&a, Some(&s), &r, 0, 100);
    let ready = cond(&st, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "AllWorkersReady"),
        "4 of 4 assigned"
    );
    let d = cond(&st, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "PartitionsMismatch")
    );
    assert!(
        d.message
            .starts_with("chat.messages has 4 partitions but spec.kafka.partitions is 8"),
        "{}",
        d.message
    );
}
