//! The ChatAgent controller: a thin shell that applies the children from `children.rs`
//! (server-side apply, one field manager), keeps a balancer running per ChatAgent, scales from
//! load when asked to, and writes the status from `status.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use meshchat_crds::{ChatAgent, ChatAgentStatus};
use meshchat_wire::Topics;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::autoscale::{Autoscaler, External, Lookup};
use crate::balancer::{BalancerSettings, Report, policy_of};
use crate::children::{self, ChildError, MANAGER, Settings, agent_key};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::status::{Observed, kinds, status};
use crate::supervisor::Supervisor;

/// A reconcile that did not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The children could not be built.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The system gave no randomness for the mesh secret.
    #[error("no randomness for the mesh secret: {0}")]
    Random(String),
}

impl Error {
    /// Short kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Child(_) => "spec",
            Error::Random(_) => "random",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Operator-wide settings for children.
    pub settings: Settings,
    /// Owns the balancers, one per ChatAgent.
    pub supervisor: Supervisor,
    /// Autoscaler state per ChatAgent key.
    pub autoscalers: Mutex<BTreeMap<String, Autoscaler>>,
    /// Consecutive failures per ChatAgent key (backoff).
    pub failures: Mutex<BTreeMap<String, u32>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
}

impl Context {
    /// A context for `client`; events are reported as `reporter`.
    pub fn new(
        client: Client,
        settings: Settings,
        supervisor: Supervisor,
        metrics: Metrics,
        reporter: Reporter,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            supervisor,
            autoscalers: Mutex::default(),
            failures: Mutex::default(),
            metrics,
        }
    }
}

/// How often a settled ChatAgent is looked at again anyway: changes of its children and of its
/// balancer's report trigger reconciles themselves.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How often one with autoscaling is looked at again (its decisions wait out time windows).
pub const AUTOSCALE_RESYNC: Duration = Duration::from_secs(5);

/// Reconcile requests the supervisor makes when a balancer's report changes.
pub type Triggers = futures::channel::mpsc::UnboundedReceiver<ObjectRef<ChatAgent>>;

/// Runs the controller until `stop`; `triggers` are reconciles asked for by the supervisor.
/// `namespaces` empty: every namespace (cluster-wide RBAC); else one watch per namespace, so
/// Roles in those namespaces are all the operator needs.
pub async fn reconcile_chat_agents(
    ctx: Arc<Context>,
    triggers: Triggers,
    namespaces: Vec<String>,
    stop: CancellationToken,
) {
    let client = ctx.client.clone();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut routes = BTreeMap::new();
    let mut controllers = Vec::new();
    let mut pod_watches = Vec::new();
    for scope in scopes {
        pod_watches.push(tokio::spawn(pods::watch_worker_pods(
            client.clone(),
            scope.clone(),
            ctx.clone(),
            stop.clone(),
        )));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        routes.insert(scope.clone(), tx);
        controllers.push(controller_in(&client, scope.as_deref()).reconcile_on(rx));
    }
    // a supervisor's trigger goes to the watch of its ChatAgent's namespace
    let router = tokio::spawn(triggers.for_each(move |r: ObjectRef<ChatAgent>| {
        let tx = routes.get(&r.namespace).or_else(|| routes.get(&None));
        if let Some(tx) = tx {
            let _ = tx.unbounded_send(r);
        }
        async {}
    }));
    let stores: Vec<_> = controllers.iter().map(Controller::store).collect();
    let sweeper = {
        // ChatAgents deleted: stop their balancers (no finalizer: nothing outside the cluster
        // to clean, and owner references delete the children)
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                let mut keep = BTreeSet::new();
                let mut ready = true;
                for store in &stores {
                    ready &= store.wait_until_ready().await.is_ok();
                    keep.extend(store.state().iter().filter_map(|a| agent_key(a).ok()));
                }
                if !ready {
                    continue;
                }
                ctx.supervisor.retain(&keep);
                ctx.metrics.agents.retain(&keep);
                ctx.metrics.balancers.set(ctx.supervisor.running() as i64);
            }
        })
    };
    let runs = controllers.into_iter().map(|controller| {
        let (shutdown, ctx) = (stop.clone(), ctx.clone());
        controller
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx)
            .for_each(|res| async move {
                match res {
                    Ok((obj, _)) => tracing::debug!(agent = %obj.name, "reconciled"),
                    Err(e) => tracing::debug!(error = %e, "reconcile failed"),
                }
            })
    });
    futures::future::join_all(runs).await;
    router.abort();
    sweeper.abort();
    for w in pod_watches {
        w.abort();
    }
    ctx.supervisor.stop_all();
    // a standby's view would go stale: only the leader exports per-ChatAgent series
    ctx.metrics.agents.retain(&BTreeSet::new());
}

/// The ChatAgent controller over one namespace, or all of them.
fn controller_in(client: &Client, namespace: Option<&str>) -> Controller<ChatAgent> {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let cfg = watcher::Config::default;
    Controller::new(api::<ChatAgent>(client, namespace), cfg())
        .owns(api::<StatefulSet>(client, namespace), cfg())
        .owns(api::<ConfigMap>(client, namespace), cfg())
        .owns(api::<Service>(client, namespace), cfg())
}

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await?)
}

/// One reconcile of one ChatAgent.
#[tracing::instrument(skip_all, fields(agent = %agent_key(&agent).unwrap_or_default()))]
pub async fn reconcile(agent: Arc<ChatAgent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    let result = reconcile_inner(&agent, &ctx).await;
    ctx.metrics.duration.observe(timer.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.kind().to_string(),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    if result.is_ok()
        && let Ok(key) = agent_key(&agent)
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&key);
    }
    result
}

async fn reconcile_inner(agent: &ChatAgent, ctx: &Context) -> Result<Action, Error> {
    let ns = agent.namespace().ok_or(ChildError::Missing("namespace"))?;
    let key = agent_key(agent)?;
    let c = children::desired(agent, &ctx.settings)?;
    apply(&ctx.client, &ns, &c.service_account).await?;
    apply(&ctx.client, &ns, &c.config).await?;
    apply(&ctx.client, &ns, &c.peers).await?;
    apply(&ctx.client, &ns, &c.service).await?;
    apply(&ctx.client, &ns, &c.pdb).await?;
    ensure_mesh_secret(agent, &ctx.client, &ns).await?;
    let sts = apply(&ctx.client, &ns, &c.stateful_set).await?;

    let previous = agent.status.clone().unwrap_or_default();
    let (report, base, problem) = match balancer_settings(agent, &ctx.client, &ns).await {
        Ok(settings) => {
            let (r, b) = ctx.supervisor.want(&key, settings, previous.migrations);
            (r, b, None)
        }
        Err(problem) => (Report::default(), previous.migrations, Some(problem)),
    };
    ctx.metrics.balancers.set(ctx.supervisor.running() as i64);

    // an HPA or a ScaledObject on this ChatAgent scales it: the built-in autoscaler stands back
    let autoscaling = agent.spec.autoscaling.as_ref().filter(|a| a.enabled);
    let lookup = match autoscaling {
        Some(_) => Some(external::external_autoscaler(&ctx.client, &ns, &agent.name_any()).await),
        None => None,
    };
    let external = match &lookup {
        Some(Lookup::Found(e)) => Some(e.clone()),
        _ => None,
    };
    let builtin = matches!(lookup, Some(Lookup::NoneFound));
    if !builtin {
        ctx.autoscalers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
    if let Some(auto) = autoscaling.filter(|_| builtin) {
        let now_ms = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
        let want = {
            let mut scalers = ctx.autoscalers.lock().unwrap_or_else(|p| p.into_inner());
            scalers.entry(key.clone()).or_default().desired(
                auto,
                agent.spec.replicas,
                report.summary.mean_load(),
                now_ms,
            )
        };
        if want != agent.spec.replicas {
            scale(agent, ctx, &ns, want, report.summary.mean_load()).await?;
        }
    }

    let next = status(&Observed {
        agent,
        stateful_set: Some(&sts),
        balancer: &report,
        migrations_base: base,
        config_problem: problem.as_deref(),
        autoscaler: lookup.as_ref(),
        now: Timestamp::now(),
    });
    ctx.metrics.agents.observe(
        &ns,
        &agent.name_any(),
        report
            .cluster
            .and_then(|c| c.partitions)
            .unwrap_or(agent.spec.kafka.partitions),
        agent.spec.replicas,
        &next,
    );
    if Some(&next) != agent.status.as_ref() {
        notable_changes(agent, ctx, &previous, &next, external.as_ref()).await;
        let api: Api<ChatAgent> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({
            "apiVersion": "meshchat.io/v1alpha1",
            "kind": "ChatAgent",
            "status": next,
        });
        api.patch_status(
            &agent.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    }
    let autoscaled = agent.spec.autoscaling.as_ref().is_some_and(|a| a.enabled);
    Ok(Action::requeue(if autoscaled {
        AUTOSCALE_RESYNC
    } else {
        RESYNC
    }))
}

/// Creates the workers' mesh secret unless it exists: a create that the API server refuses with
/// 409 when it does, so the operator never needs to read a Secret it did not get named.
async fn ensure_mesh_secret(agent: &ChatAgent, client: &Client, ns: &str) -> Result<(), Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    let value = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let secret = children::mesh_secret(agent, &value)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(_) => {
            tracing::info!(secret = %secret.metadata.name.unwrap_or_default(), "created the mesh secret");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The balancer settings of `agent`, with SASL credentials and the CA read from its Secrets.
async fn balancer_settings(agent: &ChatAgent, client: &Client, ns: &str) -> Result<BalancerSettings, String> {
    let (policy, timing) = policy_of(agent);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let read = |name: String, key: String| {
        let secrets = secrets.clone();
        async move {
            let s = secrets
                .get_opt(&name)
                .await
                .map_err(|e| format!("reading Secret {name}: {e}"))?
                .ok_or_else(|| format!("Secret {name} not found"))?;
            let v = s
                .data
                .and_then(|d| d.get(&key).cloned())
                .ok_or_else(|| format!("Secret {name} has no key {key}"))?;
            String::from_utf8(v.0).map_err(|_| format!("Secret {name} key {key} is not UTF-8"))
        }
    };
    let client_props = crate::kafka_client::balancer_properties(agent, read).await?;
    Ok(BalancerSettings {
        agent: agent_key(agent).map_err(|e| e.to_string())?,
        bootstrap: agent.spec.kafka.bootstrap_servers.clone(),
        client: client_props,
        topics: Topics::with_prefix(&agent.spec.kafka.topic_prefix),
        policy,
        timing,
    })
}

/// Sets `spec.replicas` through the scale subresource (as an HPA would).
async fn scale(
    agent: &ChatAgent,
    ctx: &Context,
    ns: &str,
    replicas: i32,
    load: Option<f64>,
) -> Result<(), Error> {
    let api: Api<ChatAgent> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({"spec": {"replicas": replicas}});
    api.patch_scale(&agent.name_any(), &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    ctx.metrics.scalings.inc();
    let note = format!(
        "replicas {} -> {replicas} (mean load {}, target {})",
        agent.spec.replicas,
        load.map_or("unknown".into(), |l| format!("{l:.2}")),
        agent.spec.autoscaling.as_ref().map_or(0.0, |a| a.target_load)
    );
    tracing::info!(agent = %agent.name_any(), %note, "autoscaled");
    publish(ctx, agent, EventType::Normal, "Scaled", "Autoscale", note).await;
    Ok(())
}

async fn publish(
    ctx: &Context,
    agent: &ChatAgent,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_related(ctx, agent, type_, reason, action, note, None).await;
}

/// [`publish`] with the object the Event is also about (events of different related objects
/// are separate events, not one series).
async fn publish_related(
    ctx: &Context,
    agent: &ChatAgent,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    secondary: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary,
    };
    if let Err(e) = ctx.recorder.publish(&event, &agent.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

/// Events for what changed between two statuses.
async fn notable_changes(
    agent: &ChatAgent,
    ctx: &Context,
    before: &ChatAgentStatus,
    after: &ChatAgentStatus,
    external: Option<&External>,
) {
    if before.replicas != after.replicas && agent.status.is_some() {
        let note = format!("workers {} -> {}", before.replicas, after.replicas);
        publish(ctx, agent, EventType::Normal, "Scaled", "Reconcile", note).await;
    }
    if after.assignment_generation > before.assignment_generation && before.assignment_generation > 0 {
        let note = format!(
            "assignment generation {} -> {} ({} moves so far)",
            before.assignment_generation, after.assignment_generation, after.migrations
        );
        publish(ctx, agent, EventType::Normal, "Rebalanced", "Balance", note).await;
    }
    let reason_of = |s: &ChatAgentStatus, kind: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    if let Some(e) = external
        && reason_of(before, kinds::EXTERNAL_AUTOSCALER).map(|(_, _, m)| m) != Some(e.describe())
    {
        let related = ObjectReference {
            api_version: Some(e.api_version().into()),
            kind: Some(e.kind.clone()),
            name: Some(e.name.clone()),
            namespace: agent.namespace(),
            ..ObjectReference::default()
        };
        let note = e.describe();
        publish_related(
            ctx,
            agent,
            EventType::Normal,
            "AutoscalingYielded",
            "Autoscale",
            note,
            Some(related),
        )
        .await;
    }
    if let Some((status, reason, message)) = reason_of(after, kinds::DEGRADED)
        && status == "True"
        && reason_of(before, kinds::DEGRADED).map(|(_, r, _)| r) != Some(reason.clone())
    {
        publish(ctx, agent, EventType::Warning, &reason, "Observe", message).await;
    }
}

/// Retries a failed reconcile with exponential backoff per ChatAgent (1 s doubling to 5 min).
pub fn error_policy(agent: Arc<ChatAgent>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = agent_key(&agent).unwrap_or_default();
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    tracing::warn!(agent = %key, error = %error, attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay before retry `n` (1-based).
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

/// The reporter for Events: the operator's pod name when known.
pub fn reporter() -> Reporter {
    Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

mod external;
mod pods;
#[cfg(test)]
mod tests;
