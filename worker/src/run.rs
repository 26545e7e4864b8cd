//! Assembles a worker from its configuration and runs it until SIGTERM or Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use meshchat_crds::{MeshEvent, SCHEMA_VERSION, SystemEvent, Topics, encode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::answer::Answerer;
use crate::config::Config;
use crate::held::Held;
use crate::hub::Hub;
use crate::kafka::{self, Producer};
use crate::lease::Lease;
use crate::llm::{Llm, LlmSettings};
use crate::load::Load;
use crate::mesh::{Heartbeat, Mesh, PartitionStats};
use crate::metrics::Metrics;
use crate::owner::OwnerLoop;
use crate::ownership::Ownership;
use crate::state::{AppState, Shared};
use crate::store::Store;
use crate::tokenizer::Tokenizer;

/// Runs the worker to completion.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let topics = Topics::with_prefix(&config.topic_prefix);
    let mut kafka = kafka::client_config(&config.kafka_bootstrap, &config.kafka_properties);
    // credentials come from the environment (a Secret), never from the config file
    if let Some(u) = &config.kafka_sasl_username {
        kafka.set("sasl.username", u);
    }
    if let Some(p) = &config.kafka_sasl_password {
        kafka.set("sasl.password", p);
    }
    let partitions = ensure_topics_with_retry(&kafka, &topics, &config).await?;
    if partitions != config.partitions {
        tracing::warn!(
            configured = config.partitions,
            actual = partitions,
            "chat.messages already exists; using its partition count"
        );
    }
    let events_partitions = kafka::partition_count(&kafka, &topics.events).await?;
    let url = config.advertise_url();
    let ownership = if config.dynamic() {
        Arc::new(Ownership::dynamic(&config.node_id))
    } else {
        let owned = config.owned(partitions)?;
        let peers = config.peer_list(partitions)?;
        Arc::new(Ownership::fixed(&config.node_id, &url, &owned, &peers))
    };
    let held = Arc::new(Held::default());
    // only a balancer declares workers dead; a static mesh's lease never lapses
    let lease = Arc::new(if config.dynamic() {
        Lease::for_heartbeats(
            Duration::from_secs_f64(config.heartbeat_timeout_secs),
            Duration::from_millis(config.heartbeat_ms),
            Instant::now(),
        )
    } else {
        Lease::new(None, Instant::now())
    });
    let stats = Arc::new(PartitionStats::default());
    let mesh = Arc::new(Mesh::new(
        &config.agent,
        Duration::from_secs_f64(config.heartbeat_timeout_secs),
    ));
    let tokenizer = Tokenizer::new(&config.tokenizer)?;
    let producer = Producer::new(&kafka)?;
    let (metrics, registry) = Metrics::new();
    let load = Arc::new(Load::new(config.llm_concurrency));
    let store = Arc::new(RwLock::new(Store::new(config.history_limit)));
    let shutdown = CancellationToken::new();
    let caught_up = Arc::new(AtomicBool::new(false));
    let llm = Llm::new(LlmSettings {
        base_url: config.llm_base_url.clone(),
        api_key: config.api_key(),
        model: config.llm_model.clone(),
        temperature: config.llm_temperature,
        max_tokens: config.llm_max_tokens,
        timeout: config.llm_timeout(),
        retries: config.llm_retries,
        backoff: Duration::from_millis(config.llm_backoff_ms),
        chunk_interval: Duration::from_millis(u64::from(config.chunk_interval_ms)),
    });
    let answerer = Arc::new(Answerer {
        llm,
        producer: producer.clone(),
        topics: topics.clone(),
        node_id: config.node_id.clone(),
        agent_name: config.agent_name.clone(),
        slots: Arc::new(Semaphore::new(config.llm_concurrency as usize)),
        load: load.clone(),
        metrics: metrics.clone(),
        tokenizer: tokenizer.clone(),
        stop_new: CancellationToken::new(),
        abandon: CancellationToken::new(),
        held: held.clone(),
        lease: lease.clone(),
        stats: stats.clone(),
    });
    let hub = Arc::new(Hub::default());
    let state = AppState(Arc::new(Shared {
        config: config.clone(),
        topics: topics.clone(),
        partitions,
        events_partitions,
        kafka: kafka.clone(),
        producer: producer.clone(),
        ownership: ownership.clone(),
        held: held.clone(),
        mesh: mesh.clone(),
        store: store.clone(),
        hub: hub.clone(),
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        load: load.clone(),
        tokenizer: tokenizer.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        started: Instant::now(),
        caught_up: caught_up.clone(),
        live_ready: Arc::new(AtomicBool::new(false)),
        kafka_ok: Arc::new(AtomicBool::new(true)),
        draining: Arc::new(AtomicBool::new(false)),
        shutdown: shutdown.clone(),
    }));

    let owner_group = format!("{}meshchat-owners", config.topic_prefix);
    let owner = OwnerLoop {
        kafka: kafka.clone(),
        topics: topics.clone(),
        partitions,
        events_partitions,
        group_id: owner_group.clone(),
        ownership: ownership.clone(),
        held: held.clone(),
        mesh: mesh.clone(),
        store: store.clone(),
        answerer,
        producer: producer.clone(),
        tokenizer,
        system_prompt: config.system_prompt.clone(),
        context_tokens: config.context_tokens,
        snapshot_interval: Duration::from_secs_f64(config.snapshot_interval_secs),
        fetch_batch_ms: config.fetch_batch_ms,
        grace: Duration::from_secs_f64(config.shutdown_grace_secs),
        handoff_grace: Duration::from_secs_f64(config.handoff_grace_secs),
        release_timeout: Duration::from_secs_f64(config.release_timeout_secs),
        metrics,
        stats: stats.clone(),
        caught_up,
        lease: lease.clone(),
        node_id: config.node_id.clone(),
    };
    let owner_stop = CancellationToken::new();
    let owner = Arc::new(owner);
    let owner_task = tokio::spawn(supervise("owner loop", owner_stop.clone(), move |stop| {
        let owner = owner.clone();
        async move { owner.run(stop).await }
    }));
    let source = crate::live::FanoutSource {
        kafka: kafka.clone(),
        topics: topics.clone(),
        partitions,
        node_id: config.node_id.clone(),
        owner_group,
        fetch_batch_ms: config.fetch_batch_ms,
    };
    let live_ready = state.0.live_ready.clone();
    let fanout_task = tokio::spawn(supervise("live fan-out", shutdown.clone(), move |stop| {
        crate::live::run_fanout(source.clone(), hub.clone(), live_ready.clone(), stop)
    }));
    let (mk, mt, mm, mo, dynamic) = (
        kafka.clone(),
        topics.clone(),
        mesh.clone(),
        ownership.clone(),
        config.dynamic(),
    );
    let mesh_task = tokio::spawn(supervise("mesh watch", shutdown.clone(), move |stop| {
        crate::mesh::watch_mesh(mk.clone(), mt.clone(), mm.clone(), mo.clone(), dynamic, stop)
    }));
    let heartbeat = Heartbeat {
        producer: producer.clone(),
        topics: topics.clone(),
        node_id: config.node_id.clone(),
        address: url.clone(),
        held: held.clone(),
        stats,
        load: load.clone(),
        store,
        ownership: ownership.clone(),
        draining: state.0.draining.clone(),
        partitions,
        events_partitions,
        interval: Duration::from_millis(config.heartbeat_ms),
        lease,
    };
    // heartbeats go on while draining, so the balancer sees `draining` and moves partitions away
    let heartbeat_stop = CancellationToken::new();
    tokio::spawn(heartbeat.run(heartbeat_stop.clone()));
    tokio::spawn(sample_load(load, shutdown.clone()));
    tokio::spawn(probe_kafka(
        kafka.clone(),
        topics.messages.clone(),
        state.0.kafka_ok.clone(),
        shutdown.clone(),
    ));
    system_event(
        &producer,
        &topics,
        &config.node_id,
        "workerStarted",
        &format!("{} ownership at {url}", config.ownership),
    )
    .await;

    // token frames and replies are small writes: without TCP_NODELAY, Nagle's algorithm holds
    // them until the client's delayed ACK (~40 ms) — measured as a 40 ms mode in reply latency
    let listener = tokio::net::TcpListener::bind(config.listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tracing::info!(node = %config.node_id, %url, partitions, ownership = %config.ownership, "serving");
    let stop = shutdown.clone();
    let shared = state.0.clone();
    let server = axum::serve(listener, crate::app(state)).with_graceful_shutdown(async move {
        signal().await;
        tracing::info!("shutdown requested: draining");
        // the balancer sees `draining` in the next heartbeat and moves every partition away
        crate::drain::drain(&shared).await;
        stop.cancel();
    });
    let server_result = server.await;
    shutdown.cancel();
    system_event(&producer, &topics, &config.node_id, "workerStopping", "drained").await;
    owner_stop.cancel();
    if let Err(e) = owner_task.await {
        tracing::error!(error = %e, "owner loop panicked");
    }
    let _ = fanout_task.await;
    let _ = mesh_task.await;
    heartbeat_stop.cancel();
    producer.flush(Duration::from_secs(10))?;
    tracing::info!("stopped");
    server_result?;
    Ok(())
}

async fn ensure_topics_with_retry(
    kafka: &rdkafka::ClientConfig,
    topics: &Topics,
    config: &Config,
) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match kafka::ensure_topics(kafka, topics, config.partitions, config.replication_factor).await {
            Ok(n) => return Ok(n),
            Err(e @ kafka::KafkaError::Topic { .. }) => return Err(e.into()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, bootstrap = %config.kafka_bootstrap, "Kafka not ready; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "Kafka at {} unreachable: {e}",
                    config.kafka_bootstrap
                ));
            }
        }
    }
}

/// Runs a loop until it returns cleanly or `stop` fires, restarting it after failures
/// (Kafka hiccups at start, a partition's leader not yet known) with capped backoff.
async fn supervise<F, Fut>(name: &'static str, stop: CancellationToken, mut start: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), kafka::KafkaError>>,
{
    let mut delay = Duration::from_millis(500);
    loop {
        match start(stop.clone()).await {
            Ok(()) => return,
            Err(e) if stop.is_cancelled() => {
                tracing::error!(error = %e, "{name} failed while stopping");
                return;
            }
            Err(e) => tracing::error!(error = %e, "{name} failed; restarting in {delay:?}"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn sample_load(load: Arc<Load>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => load.sample(0.25),
            () = stop.cancelled() => return,
        }
    }
}

/// Marks Kafka unreachable when a metadata request fails.
async fn probe_kafka(
    kafka: rdkafka::ClientConfig,
    topic: String,
    ok: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let Ok(consumer) = kafka
        .clone()
        .set("group.id", "meshchat-probe")
        .create::<BaseConsumer>()
    else {
        ok.store(false, Ordering::Relaxed);
        return;
    };
    let consumer = Arc::new(consumer);
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let (c, t) = (consumer.clone(), topic.clone());
        let reachable =
            tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&t), Duration::from_secs(3)).is_ok())
                .await
                .unwrap_or(false);
        if ok.swap(reachable, Ordering::Relaxed) != reachable {
            tracing::warn!(reachable, "Kafka reachability changed");
        }
    }
}

async fn system_event(producer: &Producer, topics: &Topics, node: &str, kind: &str, detail: &str) {
    let event = MeshEvent::System(SystemEvent {
        v: SCHEMA_VERSION,
        node: node.to_string(),
        kind: kind.to_string(),
        detail: detail.to_string(),
        timestamp: OffsetDateTime::now_utc(),
    });
    if let Ok(bytes) = encode(&event) {
        let send = producer.send(&topics.events, 0, node, &bytes);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), send).await {
            tracing::warn!(error = %e, "could not publish {kind}");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
