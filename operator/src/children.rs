//! What a ChatAgent owns, as pure functions of the resource: a StatefulSet of workers (stable
//! pod names are stable worker ids, so a restarted pod takes its own partitions back), a
//! headless Service for peer addresses, a client Service, a ConfigMap with the rendered worker
//! configuration, a PodDisruptionBudget and a ServiceAccount, and the Secret the workers share
//! (the mesh secret, see [`mesh_secret`]). The controller applies them with server-side apply;
//! nothing here talks to the API server.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use meshchat_crds::{AuthMode, AuthSpec, ChatAgent, LimitsSpec, WhileReplying};
use meshchat_wire::murmur2;
use meshchat_wire::worker::{self, LimitsFile, Ownership, WorkerFile, env as worker_env, paths};

/// Settings of the operator that shape children (not part of any ChatAgent).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Worker image when a ChatAgent names none.
    pub default_image: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_image: format!("ghcr.io/meshchat/worker:{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The one field manager of every object the operator applies.
pub const MANAGER: &str = "meshchat-operator";
/// Port workers serve their public API on.
pub const HTTP_PORT: i32 = worker::HTTP_PORT as i32;
/// Port of the workers' internal listener (probes, metrics, the drain, peers' reads).
pub const INTERNAL_PORT: i32 = worker::INTERNAL_PORT as i32;
/// The key of the mesh Secret that holds the secret.
pub const MESH_SECRET_KEY: &str = "secret";
/// The worker binary in the images (the preStop hook runs `meshchat-worker drain`).
pub const WORKER_BINARY: &str = "/usr/local/bin/meshchat-worker";
/// Where the Kafka CA bundle is mounted.
const KAFKA_CA_DIR: &str = "/etc/meshchat/kafka-ca";
/// Where the Kafka client certificate and key are mounted (mutual TLS).
const KAFKA_CLIENT_DIR: &str = "/etc/meshchat/kafka-client";
/// Pod template annotation that changes with the configuration, so pods roll when it does.
pub const CONFIG_HASH: &str = "meshchat.io/config-hash";

/// A child could not be built from the spec.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The ChatAgent has no name or namespace (not read from the API server).
    #[error("ChatAgent has no {0}")]
    Missing(&'static str),
    /// The rendered configuration could not be written.
    #[error("rendering the worker configuration: {0}")]
    Render(String),
}

/// Every child of one ChatAgent.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// Workers.
    pub stateful_set: StatefulSet,
    /// Headless Service giving each worker a stable DNS name.
    pub peers: Service,
    /// Client Service over the ready workers.
    pub service: Service,
    /// Rendered worker configuration.
    pub config: ConfigMap,
    /// At most one worker down at a time from voluntary disruptions.
    pub pdb: PodDisruptionBudget,
    /// The workers' identity.
    pub service_account: ServiceAccount,
}

/// Names of the children of ChatAgent `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// StatefulSet, client Service and PDB.
    pub workers: String,
    /// Headless Service.
    pub peers: String,
    /// ConfigMap.
    pub config: String,
    /// ServiceAccount.
    pub service_account: String,
    /// Secret with the mesh secret.
    pub mesh_secret: String,
}

impl Names {
    /// The names for ChatAgent `name`.
    pub fn of(name: &str) -> Self {
        Self {
            workers: name.to_string(),
            peers: format!("{name}-peers"),
            config: format!("{name}-config"),
            service_account: format!("{name}-worker"),
            mesh_secret: format!("{name}-mesh"),
        }
    }
}

/// Labels that select the workers of ChatAgent `name` (also the /scale selector).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "meshchat-worker".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// The selector as a string (`status.selector`, for the scale subresource).
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Keys of Secret `secret` as files in `dir` (key → file name), read-only: a volume and its mount.
fn secret_volume(volume: &str, secret: &str, files: &[(&str, &str)], dir: &str) -> (Volume, VolumeMount) {
    let items = files
        .iter()
        .map(|(key, path)| KeyToPath {
            key: (*key).to_string(),
            path: (*path).to_string(),
            ..KeyToPath::default()
        })
        .collect();
    let v = Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(items),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let m = VolumeMount {
        name: volume.into(),
        mount_path: dir.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (v, m)
}

fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l.insert("app.kubernetes.io/part-of".into(), "meshchat".into());
    l
}

/// The key of this ChatAgent's assignment table in Kafka (unique across namespaces).
pub fn agent_key(agent: &ChatAgent) -> Result<String, ChildError> {
    let (ns, name) = id(agent)?;
    Ok(format!("{ns}/{name}"))
}

fn id(agent: &ChatAgent) -> Result<(String, String), ChildError> {
    let ns = agent
        .metadata
        .namespace
        .clone()
        .ok_or(ChildError::Missing("namespace"))?;
    let name = agent.metadata.name.clone().ok_or(ChildError::Missing("name"))?;
    Ok((ns, name))
}

fn meta(agent: &ChatAgent, name: &str, owner: &OwnerReference) -> Result<ObjectMeta, ChildError> {
    let (ns, agent_name) = id(agent)?;
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns),
        labels: Some(labels(&agent_name)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    })
}

/// The Secret the workers of `agent` share: `value` is what peers present to each other's
/// internal listener. Created once (never applied again: a new value would split the mesh until
/// every pod restarted); owned by the ChatAgent, so it goes with it.
pub fn mesh_secret(agent: &ChatAgent, value: &str) -> Result<Secret, ChildError> {
    let (_, name) = id(agent)?;
    let owner = agent
        .controller_owner_ref(&())
        .ok_or(ChildError::Missing("uid"))?;
    Ok(Secret {
        metadata: meta(agent, &Names::of(&name).mesh_secret, &owner)?,
        data: Some(BTreeMap::from([(
            MESH_SECRET_KEY.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// Builds every child of `agent`.
pub fn desired(agent: &ChatAgent, settings: &Settings) -> Result<Children, ChildError> {
    let (ns, name) = id(agent)?;
    let owner = agent
        .controller_owner_ref(&())
        .ok_or(ChildError::Missing("uid"))?;
    let names = Names::of(&name);
    let file = worker_file(agent)?;
    let rendered = render(&file)?;
    let config = ConfigMap {
        metadata: meta(agent, &names.config, &owner)?,
        data: Some(BTreeMap::from([(
            worker::CONFIG_FILE.to_string(),
            rendered.clone(),
        )])),
        ..ConfigMap::default()
    };
    let service_account = ServiceAccount {
        metadata: meta(agent, &names.service_account, &owner)?,
        // workers never call the Kubernetes API
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let service_port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        ..ServicePort::default()
    };
    let peers = Service {
        metadata: meta(agent, &names.peers, &owner)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // peers forward reads to owners that may not be ready yet (replaying)
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![service_port(worker::INTERNAL_PORT_NAME, INTERNAL_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let service = Service {
        metadata: meta(agent, &names.workers, &owner)?,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            // clients reach the public port only
            ports: Some(vec![service_port(worker::HTTP_PORT_NAME, HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(agent, &names.workers, &owner)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    let stateful_set = StatefulSet {
        metadata: meta(agent, &names.workers, &owner)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(agent.spec.replicas),
            service_name: Some(names.peers.clone()),
            // worker ids are stable; start and stop them in parallel (handoffs order themselves)
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            template: pod_template(agent, &ns, &name, &names, (&file, &rendered), settings),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Ok(Children {
        stateful_set,
        peers,
        service,
        config,
        pdb,
        service_account,
    })
}

fn pod_template(
    agent: &ChatAgent,
    ns: &str,
    name: &str,
    names: &Names,
    (file, rendered): (&WorkerFile, &str),
    settings: &Settings,
) -> PodTemplateSpec {
    let spec = &agent.spec;
    let mut annotations = spec.pod_annotations.clone().unwrap_or_default();
    annotations.insert(
        CONFIG_HASH.into(),
        format!("{:08x}", murmur2(rendered.as_bytes())),
    );
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.config.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: worker::CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut secret_files = |volume: &str, secret: &str, files: &[(&str, &str)], dir: &str| {
        let (v, m) = secret_volume(volume, secret, files, dir);
        volumes.push(v);
        mounts.push(m);
    };
    if let Some(ca) = spec.kafka.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
        secret_files("kafka-ca", &ca.name, &[(&ca.key, "ca.crt")], KAFKA_CA_DIR);
    }
    if let Some(cert) = spec
        .kafka
        .tls
        .as_ref()
        .and_then(|t| t.client_cert_secret_ref.as_ref())
    {
        let files = [
            (cert.cert_key.as_str(), "tls.crt"),
            (cert.key_key.as_str(), "tls.key"),
        ];
        secret_files("kafka-client", &cert.name, &files, KAFKA_CLIENT_DIR);
    }
    // the API keys: a Secret volume (not a subPath), so the kubelet's updates reach the file
    // and the worker reloads it without a restart
    if let Some(keys) = spec.auth.as_ref().and_then(|a| a.api_keys_secret_ref.as_ref()) {
        secret_files(
            "api-keys",
            &keys.name,
            &[(&keys.key, worker::API_KEYS_FILE)],
            worker::API_KEYS_DIR,
        );
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(worker::INTERNAL_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container = Container {
        name: "worker".into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| settings.default_image.clone()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(vec![
            "--config".into(),
            format!("{}/{}", worker::CONFIG_DIR, worker::CONFIG_FILE),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some(worker::HTTP_PORT_NAME.into()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(worker::INTERNAL_PORT_NAME.into()),
                container_port: INTERNAL_PORT,
                ..ContainerPort::default()
            },
        ]),
        env: Some(env(agent, ns, names)),
        resources: spec.resources.clone(),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        readiness_probe: Some(probe(paths::READINESS, 2, 3)),
        liveness_probe: Some(probe(paths::LIVENESS, 10, 6)),
        // hand partitions away before SIGTERM: the kubelet waits for this command to return.
        // It calls the drain on loopback, the only caller the worker accepts without the mesh
        // secret: nothing outside the pod can take a worker out of service.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![WORKER_BINARY.into(), "drain".into()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(name)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.service_account.clone()),
            automount_service_account_token: Some(false),
            security_context: Some(pod_security()),
            termination_grace_period_seconds: Some(
                spec.termination_grace_period_seconds
                    .unwrap_or_else(|| worker::termination_grace_secs(file)),
            ),
            containers: vec![container],
            volumes: Some(volumes),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            affinity: spec.affinity.clone(),
            ..PodSpec::default()
        }),
    }
}

/// The user worker pods run as: not root (the images' numeric user, docker/Dockerfile).
pub const WORKER_UID: i64 = 10001;

/// Pod Security Admission `restricted`: not root, the runtime's default seccomp profile.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(WORKER_UID),
        run_as_group: Some(WORKER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Pod Security Admission `restricted` for the worker container: no privilege escalation, no
/// capability, and a read-only root filesystem (a worker writes nothing to disk).
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The worker's environment: identity from the pod, secrets by reference, then the user's
/// variables — never a `MESHCHAT_*` one (the API server refuses them; a ChatAgent from before
/// that rule must not steer the worker's settings or credentials either).
fn env(agent: &ChatAgent, ns: &str, names: &Names) -> Vec<EnvVar> {
    let peers = &names.peers;
    let mut env = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        plain(worker_env::NODE_ID, "$(POD_NAME)"),
        plain(
            worker_env::ADVERTISE_URL,
            format!("http://$(POD_NAME).{peers}.{ns}.svc:{HTTP_PORT}"),
        ),
        plain(
            worker_env::INTERNAL_ADVERTISE_URL,
            format!("http://$(POD_NAME).{peers}.{ns}.svc:{INTERNAL_PORT}"),
        ),
        from_secret(worker_env::MESH_SECRET, &names.mesh_secret, MESH_SECRET_KEY),
        plain(worker_env::LOG_FORMAT, worker::LogFormat::Json.as_str()),
    ];
    if let Some(k) = &agent.spec.llm.api_key_secret_ref {
        env.push(from_secret(worker_env::LLM_API_KEY, &k.name, &k.key));
    }
    if let Some(sasl) = &agent.spec.kafka.sasl {
        let c = &sasl.credentials_secret_ref;
        env.push(match &c.username {
            Some(user) => plain(worker_env::KAFKA_SASL_USERNAME, user.clone()),
            None => from_secret(worker_env::KAFKA_SASL_USERNAME, &c.name, &c.username_key),
        });
        env.push(from_secret(
            worker_env::KAFKA_SASL_PASSWORD,
            &c.name,
            &c.password_key,
        ));
    }
    for user in agent.spec.env.iter().flatten() {
        if user.name.starts_with("MESHCHAT_") {
            continue;
        }
        env.retain(|e| e.name != user.name);
        env.push(user.clone());
    }
    env
}

/// librdkafka settings for the ChatAgent's SASL/TLS choices; `in_pod`: the CA bundle and the
/// client certificate are files mounted in the worker pods (the balancer passes them as PEM).
pub fn kafka_properties(agent: &ChatAgent, in_pod: bool) -> Vec<(String, String)> {
    let k = &agent.spec.kafka;
    let protocol = match (k.sasl.is_some(), k.tls.is_some()) {
        (false, false) => return Vec::new(),
        (true, true) => "SASL_SSL",
        (true, false) => "SASL_PLAINTEXT",
        (false, true) => "SSL",
    };
    let mut props = vec![("security.protocol".to_string(), protocol.to_string())];
    if let Some(s) = &k.sasl {
        props.push(("sasl.mechanism".into(), s.mechanism.as_str().into()));
    }
    if let Some(tls) = k.tls.as_ref().filter(|_| in_pod) {
        if tls.ca_secret_ref.is_some() {
            props.push(("ssl.ca.location".into(), format!("{KAFKA_CA_DIR}/ca.crt")));
        }
        if tls.client_cert_secret_ref.is_some() {
            props.push((
                "ssl.certificate.location".into(),
                format!("{KAFKA_CLIENT_DIR}/tls.crt"),
            ));
            props.push(("ssl.key.location".into(), format!("{KAFKA_CLIENT_DIR}/tls.key")));
        }
    }
    props
}

/// The worker configuration the operator renders for `agent` (see [`WorkerFile`]). The heartbeat
/// timeout is not in it: workers read the balancer's from its assignment table.
pub fn worker_file(agent: &ChatAgent) -> Result<WorkerFile, ChildError> {
    let spec = &agent.spec;
    let props = kafka_properties(agent, true);
    Ok(WorkerFile {
        ownership: Ownership::Dynamic,
        agent: agent_key(agent)?,
        agent_name: spec.agent_name.clone(),
        kafka_bootstrap: spec.kafka.bootstrap_servers.clone(),
        topic_prefix: spec.kafka.topic_prefix.clone(),
        partitions: spec.kafka.partitions,
        replication_factor: Some(spec.kafka.replication_factor),
        min_insync_replicas: Some(spec.kafka.min_insync_replicas),
        kafka_properties: (!props.is_empty()).then(|| {
            props
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }),
        drain_timeout_secs: Some(worker::DRAIN_TIMEOUT_SECS),
        shutdown_grace_secs: Some(worker::SHUTDOWN_GRACE_SECS),
        llm_base_url: spec.llm.base_url.clone(),
        llm_model: spec.llm.model.clone(),
        system_prompt: spec.llm.system_prompt.clone(),
        llm_temperature: spec.llm.temperature.map(f64::from),
        llm_max_tokens: spec.llm.max_tokens,
        context_tokens: spec.llm.context_tokens,
        llm_concurrency: spec.llm.concurrency,
        llm_timeout_secs: spec.llm.timeout_seconds,
        while_replying: spec.llm.while_replying.map(|w| match w {
            WhileReplying::Enqueue => meshchat_wire::worker::WhileReplying::Enqueue,
            WhileReplying::Interrupt => meshchat_wire::worker::WhileReplying::Interrupt,
        }),
        limits: spec.limits.as_ref().map(limits_options).unwrap_or_default(),
        ..auth_options(spec.auth.as_ref())
    })
}

/// The worker options of `spec.limits`.
fn limits_options(l: &LimitsSpec) -> LimitsFile {
    LimitsFile {
        user_messages_per_minute: l.user_messages_per_minute,
        user_message_burst: l.user_message_burst,
        tenant_messages_per_minute: l.tenant_messages_per_minute,
        tenant_message_burst: l.tenant_message_burst,
        user_reads_per_minute: l.user_reads_per_minute,
        user_streams: l.user_streams,
        tenant_streams: l.tenant_streams,
        worker_streams: l.worker_streams,
        tenant_llm_tokens_per_minute: l.tenant_llm_tokens_per_minute,
        quota_wait_secs: l.quota_wait_seconds,
        max_pending_per_conversation: l.max_pending_per_conversation,
        max_participants_per_conversation: l.max_participants_per_conversation,
        max_requests: l.max_requests,
        max_backlog: l.max_backlog,
    }
}

/// The worker options of `spec.auth`. Without it (the API server refuses such a ChatAgent; an
/// old object may lack it) the worker gets no credentials and refuses to start, loudly: never
/// an open API by omission.
fn auth_options(auth: Option<&AuthSpec>) -> WorkerFile {
    let Some(auth) = auth else {
        return WorkerFile {
            auth: Some("required".into()),
            ..WorkerFile::default()
        };
    };
    let jwt = auth.jwt.as_ref();
    WorkerFile {
        auth: Some(match auth.mode {
            AuthMode::Required => "required".into(),
            AuthMode::None => "none".into(),
        }),
        api_keys_file: auth
            .api_keys_secret_ref
            .as_ref()
            .map(|_| format!("{}/{}", worker::API_KEYS_DIR, worker::API_KEYS_FILE)),
        jwks_url: jwt.map(|j| j.jwks_url.clone()),
        jwt_issuer: jwt.map(|j| j.issuer.clone()),
        jwt_audience: jwt.map(|j| j.audience.clone()),
        jwt_tenant_claim: jwt.and_then(|j| j.tenant_claim.clone()),
        jwt_user_claim: jwt.and_then(|j| j.user_claim.clone()),
        jwt_role_claim: jwt.and_then(|j| j.role_claim.clone()),
        jwt_leeway_secs: jwt.and_then(|j| j.leeway_seconds),
        migrate_per_minute: auth.migrate_per_minute,
        ..WorkerFile::default()
    }
}

/// The worker configuration file's text.
pub fn render(file: &WorkerFile) -> Result<String, ChildError> {
    serde_saphyr::to_string(file).map_err(|e| ChildError::Render(e.to_string()))
}

#[cfg(test)]
mod tests;
