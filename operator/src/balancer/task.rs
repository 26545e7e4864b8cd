//! The balancer against Kafka: reads heartbeats and migrate requests from `chat.events`,
//! continues from the latest table on `chat.assignments`, and publishes new tables there.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meshchat_crds::ChatAgent;
use meshchat_wire::kafka::{self, KafkaError, Producer, TailFetch};
use meshchat_wire::{
    HandoffEvent, HandoffStep, MIGRATION_REFUSED, MeshEvent, SCHEMA_VERSION, SystemEvent, Topics, decode,
    encode, partition_for,
};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Balancer, Outcome, RoundTiming, Summary};
use crate::planner::Policy;

/// How long a balancer that cannot reach Kafka listens for the reason (a refused login, say).
const REFUSAL_WAIT: Duration = Duration::from_secs(3);

/// How `meshchat-operator local` runs.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Kafka bootstrap (overrides the manifest's).
    pub bootstrap: Option<String>,
    /// Where the Secrets `spec.kafka` names are, laid out as Kubernetes mounts them
    /// (`<dir>/<secret>/<key>`).
    pub secrets_dir: Option<std::path::PathBuf>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The balancing policy a ChatAgent asks for.
pub fn policy_of(agent: &ChatAgent) -> (Policy, RoundTiming) {
    let r = &agent.spec.rebalance;
    let policy = Policy {
        high_watermark: r.high_watermark,
        low_watermark: r.low_watermark,
        max_moves: r.max_moves_per_round as usize,
        cooldown_ms: u64::from(r.cooldown_seconds) * 1000,
        consolidate: agent.spec.autoscaling.as_ref().is_some_and(|a| a.enabled),
        ..Policy::default()
    };
    let timing = RoundTiming {
        interval_ms: u64::from(r.interval_seconds) * 1000,
        heartbeat_timeout_ms: u64::from(r.heartbeat_timeout_seconds) * 1000,
    };
    (policy, timing)
}

/// Everything one balancer needs (from a ChatAgent, plus how to reach Kafka).
#[derive(Clone, Debug, PartialEq)]
pub struct BalancerSettings {
    /// Key of the assignment table (`name` locally, `namespace/name` on Kubernetes).
    pub agent: String,
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Extra librdkafka settings (SASL, TLS).
    pub client: Vec<(String, String)>,
    /// Topic names.
    pub topics: Topics,
    /// Placement policy.
    pub policy: Policy,
    /// Round interval and heartbeat timeout.
    pub timing: RoundTiming,
}

/// Runs the balancer for `name` from a manifest, without Kubernetes, until SIGINT/SIGTERM; a
/// failed one starts again after a pause.
pub async fn balance_locally(agent: ChatAgent, opts: LocalOptions) -> anyhow::Result<()> {
    let name = agent
        .metadata
        .name
        .clone()
        .context("the ChatAgent has no metadata.name")?;
    let (policy, timing) = policy_of(&agent);
    // SASL credentials and certificates as the operator reads them from the Secrets
    let dir = opts.secrets_dir.as_deref();
    let client = crate::kafka_client::balancer_properties(&agent, |secret, key| {
        crate::kafka_client::read_secret_file(dir, secret, key)
    })
    .await
    .map_err(anyhow::Error::msg)?;
    let settings = BalancerSettings {
        agent: name,
        bootstrap: opts
            .bootstrap
            .unwrap_or_else(|| agent.spec.kafka.bootstrap_servers.clone()),
        client,
        topics: Topics::with_prefix(&agent.spec.kafka.topic_prefix),
        policy,
        timing,
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    let (tx, _rx) = watch::channel(Report::default());
    // no Kubernetes: nobody reports pods gone; heartbeats alone tell
    let (_no_pods, gone) = mpsc::unbounded_channel();
    // as under the operator: a balancer that failed (Kafka gone, a topic not ready) starts again
    crate::supervisor::supervise(settings.agent.clone(), settings, stop, tx, gone).await;
    Ok(())
}

/// What a running balancer tells its host (the operator's status).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Kafka answered the last metadata request.
    pub kafka_reachable: Option<bool>,
    /// Why not, in librdkafka's words, when it said (a refused login, say).
    pub kafka_refusal: Option<String>,
    /// The cluster and `chat.messages` as the last metadata answer described them.
    pub cluster: Option<kafka::ClusterView>,
    /// The workers have not created the topics yet.
    pub waiting_for_topics: bool,
    /// The balancer's state.
    pub summary: Summary,
}

/// Runs one balancer until `stop`: reads heartbeats and migrate requests, publishes tables,
/// and reports its state on `report` (about once a second). `gone` names workers whose pods
/// Kubernetes reported gone: they fail over at once.
pub async fn balance(
    settings: BalancerSettings,
    stop: CancellationToken,
    report: watch::Sender<Report>,
    gone: &mut mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    let BalancerSettings {
        agent: name,
        bootstrap,
        client,
        topics,
        policy,
        timing,
    } = settings;
    let base = kafka::client_config(&bootstrap, "meshchat-balancer", &client);
    let meta: Arc<BaseConsumer> =
        Arc::new(kafka::range_reader(&base, kafka::group::BALANCER_METADATA).create()?);
    // the workers create the topics; wait for them
    let mut waited = false;
    let (partitions, events) = loop {
        let (m, t) = (meta.clone(), topics.clone());
        let Some(found) = until_stopped(&stop, move || {
            (
                kafka::topic_partitions(&m, &t.messages),
                kafka::topic_partitions(&m, &t.events),
                kafka::topic_partitions(&m, &t.assignments),
                kafka::cluster_view(&m, &t.messages).ok(),
            )
        })
        .await?
        else {
            return Ok(());
        };
        match found {
            (Ok(p), Ok(e), Ok(_), _) => break (p, e),
            (m, _, _, cluster) => {
                // a client error means no broker answered; otherwise a topic is missing
                let reachable = !matches!(&m, Err(KafkaError::Client(_)));
                // the metadata timeout does not say why: a polled client hears it
                let refusal = if reachable {
                    None
                } else {
                    let probe = base.clone();
                    until_stopped(&stop, move || kafka::refusal(&probe, REFUSAL_WAIT))
                        .await?
                        .flatten()
                };
                report.send_modify(|r| {
                    r.kafka_reachable = Some(reachable);
                    r.kafka_refusal = refusal;
                    r.cluster = cluster;
                    r.waiting_for_topics = true;
                });
                if !waited {
                    tracing::info!(%bootstrap, agent = %name, reachable, "waiting for the workers to create the topics");
                    waited = true;
                }
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let (m, t, n) = (meta.clone(), topics.assignments.clone(), name.clone());
    let Some(table) = until_stopped(&stop, move || {
        kafka::while_settling(|| kafka::latest_table(&m, &t, &n))
    })
    .await?
    else {
        return Ok(());
    };
    let table = table?;
    let producer = Producer::new(&base)?;
    // fixed partitions, and a waiting fetch returns as soon as a record arrives
    let consumer: StreamConsumer =
        kafka::tail_consumer(&base, kafka::group::BALANCER, TailFetch::LongPoll).create()?;
    // start one heartbeat timeout back: a restarted balancer hears at once every worker that
    // was alive a moment ago, instead of declaring dead those whose heartbeats it missed while
    // it was connecting
    let since = now_ms().saturating_sub(timing.heartbeat_timeout_ms);
    let (m, t) = (meta.clone(), topics.events.clone());
    let Some(tpl) = until_stopped(&stop, move || {
        kafka::while_settling(|| kafka::offsets_since(&m, &t, events, since))
    })
    .await?
    else {
        return Ok(());
    };
    let tpl = tpl?;
    consumer.assign(&tpl)?;
    tracing::info!(agent = %name, partitions, generation = table.as_ref().map_or(0, |t| t.generation), "balancer starting");
    let mut balancer = Balancer::new(&name, partitions, policy, timing, table, now_ms());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let stopping = || {
        tracing::info!(agent = %name, "balancer stopping; workers keep the last table");
        Ok(())
    };
    loop {
        tokio::select! {
            // a stop wins over work that is also ready
            biased;
            () = stop.cancelled() => return stopping(),
            _ = status_tick.tick() => {
                let (m, t) = (meta.clone(), topics.messages.clone());
                let Some(cluster) = until_stopped(&stop, move || kafka::cluster_view(&m, &t).ok()).await? else {
                    return stopping();
                };
                let summary = balancer.summary(now_ms());
                report.send_modify(|r| {
                    r.kafka_reachable = Some(cluster.is_some());
                    r.kafka_refusal = None;
                    r.cluster = cluster;
                    r.waiting_for_topics = false;
                    r.summary = summary;
                });
            }
            Some(worker) = gone.recv() => {
                tracing::info!(agent = %name, %worker, "Kubernetes reports the worker's pod gone; failing its partitions over");
                balancer.gone(&worker, now_ms());
                // the round runs now, not at the next tick
                tick.reset_immediately();
            }
            _ = tick.tick() => {
                if let Some(out) = balancer.tick(now_ms())
                    && or_stop(&stop, publish(&producer, &topics, events, &name, &out)).await.transpose()?.is_none()
                {
                    return stopping();
                }
            }
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error");
                        continue;
                    }
                };
                match m.payload().map(decode::<MeshEvent>) {
                    Some(Ok(MeshEvent::LoadReport(r))) => balancer.observe(r, now_ms()),
                    Some(Ok(MeshEvent::MigrateRequest(req))) => match balancer.migrate(&req, now_ms()) {
                        Ok(Some(out)) => {
                            tracing::info!(request = %req.id, target = %req.target, partitions = ?req.partitions, "migration requested");
                            if or_stop(&stop, publish(&producer, &topics, events, &name, &out)).await.transpose()?.is_none() {
                                return stopping();
                            }
                        }
                        Ok(None) => tracing::info!(request = %req.id, "migration: nothing to move"),
                        Err(why) => {
                            tracing::warn!(request = %req.id, "migration refused: {why}");
                            // the client was told "Migration started": the mesh view says why not
                            let ev = MeshEvent::System(SystemEvent {
                                v: SCHEMA_VERSION,
                                node: format!("balancer/{name}"),
                                kind: MIGRATION_REFUSED.into(),
                                detail: format!("{}: {why}", req.id),
                                timestamp: OffsetDateTime::now_utc(),
                            });
                            if let Ok(bytes) = encode(&ev) {
                                producer.send_nowait(&topics.events, partition_for(&name, events), &name, &bytes);
                            }
                        }
                    },
                    _ => {}
                }
            }
        }
    }
}

async fn publish(
    producer: &Producer,
    topics: &Topics,
    events: i32,
    agent: &str,
    out: &Outcome,
) -> anyhow::Result<()> {
    let bytes = encode(&out.table)?;
    producer.send(&topics.assignments, 0, agent, &bytes).await?;
    tracing::info!(
        generation = out.table.generation,
        moves = out.moves.len(),
        detail = ?out.moves.iter().map(|m| format!("p{}:{}->{}({})", m.partition, m.from.as_deref().unwrap_or("-"), m.to, m.reason.as_str())).collect::<Vec<_>>(),
        "published assignment"
    );
    for m in &out.moves {
        let ev = MeshEvent::Handoff(HandoffEvent {
            v: SCHEMA_VERSION,
            partition: m.partition,
            epoch: m.epoch,
            from: m.from.clone().unwrap_or_default(),
            to: m.to.clone(),
            step: HandoffStep::Assigned(m.reason),
            committed_offset: None,
            replayed: None,
            timestamp: OffsetDateTime::now_utc(),
        });
        let key = format!("p{}", m.partition);
        producer.send_nowait(&topics.events, partition_for(&key, events), &key, &encode(&ev)?);
    }
    Ok(())
}

/// `fut`'s output, or `None` when `stop` comes first: with Kafka unreachable a call or a write
/// waits for it, and a shutdown must not.
async fn or_stop<F: std::future::Future>(stop: &CancellationToken, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = stop.cancelled() => None,
        out = fut => Some(out),
    }
}

/// Runs blocking Kafka calls (bounded by their own timeouts) off the runtime, until `stop`.
async fn until_stopped<T: Send + 'static>(
    stop: &CancellationToken,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<Option<T>> {
    or_stop(stop, tokio::task::spawn_blocking(f))
        .await
        .transpose()
        .context("a Kafka call panicked")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
