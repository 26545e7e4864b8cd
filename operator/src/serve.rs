//! `meshchat-operator run`: elects a leader among the operator's replicas; the leader runs the
//! ChatAgent controller and the balancers; every replica serves metrics and probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::children::Settings;
use crate::controller::{self, Context};
use crate::leader;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Metrics and probes address.
    pub listen: SocketAddr,
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    /// Namespace of the Lease (the operator's own).
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// Children settings.
    pub settings: Settings,
    /// Election timing.
    pub timing: leader::ElectionTiming,
    /// Namespaces whose ChatAgents this operator manages; empty: every namespace.
    pub namespaces: Vec<String>,
}

#[derive(Clone)]
struct Web {
    metrics: Metrics,
    /// The controller's watches are running (leader) or we are a standby (follower).
    ready: Arc<AtomicBool>,
}

async fn metrics_text(State(w): State<Web>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        w.metrics.encode(),
    )
}

async fn ready(State(w): State<Web>) -> impl IntoResponse {
    if w.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Runs until `stop`.
pub async fn operate(client: Client, opts: Options, stop: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    let web = Web {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(web.clone());
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    tracing::info!(listen = %opts.listen, identity = %opts.identity, "operator serving metrics and probes");
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });

    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(leader::campaign(
        client.clone(),
        opts.lease_namespace.clone(),
        opts.lease_name.clone(),
        opts.identity.clone(),
        opts.timing,
        leading_tx,
        stop.clone(),
    ));
    web.ready.store(true, Ordering::Relaxed);
    loop {
        // standby until elected
        tokio::select! {
            () = stop.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        metrics.leader.set(1);
        let term = CancellationToken::new();
        let (supervisor, triggers) = Supervisor::new();
        let ctx = Arc::new(Context::new(
            client.clone(),
            opts.settings.clone(),
            supervisor,
            metrics.clone(),
            controller::reporter(),
        ));
        tracing::info!("leading: starting the ChatAgent controller");
        let running = tokio::spawn(controller::reconcile_chat_agents(
            ctx,
            triggers,
            opts.namespaces.clone(),
            term.clone(),
        ));
        tokio::select! {
            () = stop.cancelled() => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("lost the lease: stopping the controller and balancers"),
        }
        term.cancel();
        let _ = running.await;
        metrics.leader.set(0);
        if stop.is_cancelled() {
            break;
        }
    }
    let _ = election.await;
    let _ = server.await;
    Ok(())
}
