//! A worker assembled from its configuration: the log (Kafka), the owner (ownership machine,
//! store, answers, LLM), live delivery (fan-out and hub), the mesh view (assignments, peers,
//! heartbeat), and the HTTP API over them (`node/service.rs`). [`serve`] runs it until SIGTERM
//! or Ctrl-C.

mod service;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use meshchat_wire::kafka;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::drain::Drain;
use crate::http::HttpSettings;
use crate::index::{ConversationIndex, IndexFollower};
use crate::limits::Limits;
use crate::live::{Fanout, Hub};
use crate::llm::Llm;
use crate::load::Load;
use crate::log::Log;
use crate::mesh::{Heartbeat, Mesh};
use crate::metrics::Metrics;
use crate::owner::{Answerer, Owner};
use crate::ownership::{AssignmentSource, HeartbeatLease, Held, PartitionMachine};
use crate::store::{Keep, Store};
use crate::tokenizer::Tokenizer;

/// The parts of a running worker, as the HTTP API sees them.
pub struct Node {
    http: HttpSettings,
    agent_name: String,
    keep: Keep,
    log: Arc<Log>,
    assignments: Arc<AssignmentSource>,
    held: Held,
    store: Arc<RwLock<Store>>,
    mesh: Arc<Mesh>,
    hub: Arc<Hub>,
    live_ready: Arc<AtomicBool>,
    load: Arc<Load>,
    tokenizer: Tokenizer,
    registry: Registry,
    metrics: Metrics,
    client: reqwest::Client,
    relay_client: reqwest::Client,
    started: Instant,
    drain: Drain,
    auth: Authenticator,
    /// (conversation key, user) pairs known to take part: membership only grows, so a
    /// positive answer never goes stale, and a user's sends after the first skip the owner.
    members: quick_cache::sync::Cache<(String, String), ()>,
    /// Migrate requests per tenant.
    migrations: MigrateLimiter,
    /// What callers and tenants may take.
    limits: Arc<Limits>,
    /// Fired on shutdown: closes live streams.
    closing: CancellationToken,
    /// Every conversation, for lists.
    index: Arc<RwLock<ConversationIndex>>,
    /// Set once the index is read.
    index_loaded: Arc<AtomicBool>,
}

type MigrateLimiter = governor::DefaultKeyedRateLimiter<String>;

/// How many (conversation, user) memberships a worker remembers.
const MEMBER_CACHE: usize = 100_000;

/// The background work of a node, started by [`serve`].
struct Tasks {
    owner: Owner,
    fanout: Fanout,
    heartbeat: Heartbeat,
    index: IndexFollower,
}

/// Runs the worker described by `config` until SIGTERM or Ctrl-C, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (node, tasks) = assemble(&config).await?;
    let node = Arc::new(node);
    let owner_stop = CancellationToken::new();
    let Tasks {
        owner,
        fanout,
        heartbeat,
        index,
    } = tasks;
    let owner = Arc::new(owner);
    let owner_task = tokio::spawn(supervise("owner loop", owner_stop.clone(), move |stop| {
        let owner = owner.clone();
        async move { owner.hold_partitions(stop).await }
    }));
    let closing = node.closing.clone();
    let index = Arc::new(index);
    tokio::spawn(supervise("conversation index", closing.clone(), move |stop| {
        let index = index.clone();
        async move { index.follow(stop).await }
    }));
    let fanout = Arc::new(fanout);
    let fanout_task = tokio::spawn(supervise("live fan-out", closing.clone(), move |stop| {
        let fanout = fanout.clone();
        async move { fanout.deliver(stop).await }
    }));
    let (mesh, log) = (node.mesh.clone(), node.log.clone());
    let follows = config.dynamic().then(|| node.assignments.clone());
    let mesh_task = tokio::spawn(supervise("mesh watch", closing.clone(), move |stop| {
        mesh.clone().follow(log.clone(), follows.clone(), stop)
    }));
    // heartbeats go on while draining, so the balancer sees `draining` and moves partitions away
    let heartbeat_stop = CancellationToken::new();
    tokio::spawn(heartbeat.beat(heartbeat_stop.clone()));
    tokio::spawn(sample_load(node.load.clone(), closing.clone()));
    tokio::spawn(node.log.clone().probe(closing.clone()));
    let url = config.advertise_url();
    node.log
        .publish_system(
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
    let internal_listener = tokio::net::TcpListener::bind(config.internal_listen).await?;
    let internal_url = config.internal_advertise_url();
    tracing::info!(node = %config.node_id, %url, internal = %internal_url, partitions = node.log.partitions(), ownership = %config.ownership, "serving");
    if config.mesh_secret.is_none() {
        tracing::warn!("no mesh secret: peers' forwarded reads are guarded by the network only");
    }
    if node.auth.disabled() {
        tracing::warn!("{}", crate::http::AUTH_NONE_WARNING);
    }
    let draining = node.clone();
    let public = axum::serve(listener, crate::http::app(node.clone())).with_graceful_shutdown(async move {
        signal().await;
        tracing::info!("shutdown requested: draining");
        // the balancer sees `draining` in the next heartbeat and moves every partition away
        draining.drain.stop().await;
        draining.closing.cancel();
    });
    // probes, metrics and peers' reads go on while the public side drains
    let internal = axum::serve(
        internal_listener,
        crate::http::internal_app(node.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(closing.clone().cancelled_owned());
    let (server_result, internal_result) = tokio::join!(public.into_future(), internal.into_future());
    closing.cancel();
    node.log
        .publish_system(&config.node_id, "workerStopping", "drained")
        .await;
    owner_stop.cancel();
    if let Err(e) = owner_task.await {
        tracing::error!(error = %e, "owner loop panicked");
    }
    let _ = fanout_task.await;
    let _ = mesh_task.await;
    heartbeat_stop.cancel();
    node.log.producer().flush(Duration::from_secs(10))?;
    tracing::info!("stopped");
    server_result?;
    internal_result?;
    Ok(())
}

/// Builds every component from `config` (connecting to Kafka and creating missing topics).
async fn assemble(config: &Config) -> anyhow::Result<(Node, Tasks)> {
    let closing = CancellationToken::new();
    let auth = Authenticator::start(
        &config.auth_settings(),
        config.mesh_secret.as_deref(),
        closing.clone(),
    )
    .await?;
    let log = Arc::new(Log::connect(&config.log_settings()).await?);
    let partitions = log.partitions();
    let url = config.advertise_url();
    let assignments = Arc::new(if config.dynamic() {
        AssignmentSource::dynamic(&config.node_id)
    } else {
        let (owned, peers) = (config.owned(partitions)?, config.peer_list(partitions)?);
        AssignmentSource::fixed(&config.node_id, &config.internal_advertise_url(), &owned, &peers)
    });
    let held = Held::new(PartitionMachine::new(&config.node_id, config.timeouts()));
    // follows the balancer's timeout from its tables; never lapses with static ownership
    let lease = Arc::new(HeartbeatLease::new(config.heartbeat_every(), Instant::now()));
    let mesh = Arc::new(Mesh::new(&config.agent));
    let tokenizer = Tokenizer::new(config.tokenizer.name())?;
    let (metrics, registry) = Metrics::new();
    let load = Arc::new(Load::new(config.llm_concurrency, metrics.load_gauges()));
    let store = Arc::new(RwLock::new(Store::new(config.keep())));
    let limits = Arc::new(Limits::new(config.limit_settings()));
    {
        // the limiters remember callers; forget the idle ones
        let (limits, closing) = (limits.clone(), closing.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => limits.forget_idle(),
                    () = closing.cancelled() => return,
                }
            }
        });
    }
    let answerer = Arc::new(Answerer::new(
        config.answer_settings(),
        Llm::new(config.llm_settings()),
        config.llm_concurrency,
        log.clone(),
        load.clone(),
        metrics.clone(),
        tokenizer.clone(),
        held.clone(),
        lease.clone(),
        limits.clone(),
    ));
    let owner = Owner::new(
        config.owner_settings(),
        log.clone(),
        assignments.clone(),
        held.clone(),
        store.clone(),
        answerer,
        tokenizer.clone(),
        metrics.clone(),
        load.clone(),
        lease.clone(),
        mesh.clone(),
    );
    let hub = Arc::new(Hub::default());
    let index = Arc::new(RwLock::new(ConversationIndex::default()));
    let index_loaded = Arc::new(AtomicBool::new(false));
    let live_ready = Arc::new(AtomicBool::new(false));
    let fanout = Fanout {
        log: log.clone(),
        node_id: config.node_id.clone(),
        fetch: config.fetch(),
        hub: hub.clone(),
        ready: live_ready.clone(),
    };
    let draining = Arc::new(AtomicBool::new(false));
    let heartbeat = Heartbeat {
        node_id: config.node_id.clone(),
        address: url,
        internal_address: config.internal_advertise_url(),
        interval: config.heartbeat_every(),
        log: log.clone(),
        held: held.clone(),
        load: load.clone(),
        store: store.clone(),
        assignments: assignments.clone(),
        draining: draining.clone(),
        lease,
    };
    let drain = Drain {
        node_id: config.node_id.clone(),
        draining,
        stopping: AtomicBool::new(false),
        dynamic: config.dynamic(),
        timeout: Duration::from_secs_f64(config.drain_timeout_secs),
        heartbeat: config.heartbeat_every(),
        held: held.clone(),
        mesh: mesh.clone(),
    };
    let node = Node {
        http: config.http_settings(partitions),
        agent_name: config.agent_name.clone(),
        keep: config.keep(),
        log,
        assignments,
        held,
        store,
        mesh,
        hub,
        live_ready,
        load,
        tokenizer,
        registry,
        metrics,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        // relayed live streams last as long as their clients: no overall timeout
        relay_client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()?,
        started: Instant::now(),
        drain,
        auth,
        members: quick_cache::sync::Cache::new(MEMBER_CACHE),
        migrations: migrate_limiter(config.migrate_per_minute),
        limits,
        closing,
        index: index.clone(),
        index_loaded: index_loaded.clone(),
    };
    let tasks = Tasks {
        owner,
        fanout,
        heartbeat,
        index: IndexFollower {
            log: node.log.clone(),
            index,
            loaded: index_loaded,
        },
    };
    Ok((node, tasks))
}

/// `per_minute` requests a minute per tenant, in bursts of up to a third of that.
fn migrate_limiter(per_minute: u32) -> MigrateLimiter {
    let rate = std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(per_minute.div_ceil(3)).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_minute(rate).allow_burst(burst))
}

/// Runs a loop until it returns cleanly or `stop` fires, restarting it after failures
/// (Kafka hiccups at start, a partition's leader not yet known) with capped backoff.
async fn supervise<F, Fut>(name: &'static str, stop: CancellationToken, mut start: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), kafka::KafkaError>>,
{
    let mut delays = crate::retry::forever(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
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

/// Resolves on SIGTERM or Ctrl-C.
async fn signal() {
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
