//! The `ChatAgent` custom resource: one mesh of chat workers and its balancer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a MeshChat mesh.
// several `printcolumn(type_ = ...)` entries look like duplicates to clippy
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "meshchat.io",
    version = "v1alpha1",
    kind = "ChatAgent",
    namespaced,
    status = "ChatAgentStatus",
    shortname = "chat",
    category = "meshchat",
    derive = "PartialEq",
    doc = "A mesh of MeshChat workers serving LLM chat, balanced by the MeshChat operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Load", type_ = "number", json_path = ".status.load"),
    printcolumn(
        name = "Generation",
        type_ = "integer",
        json_path = ".status.assignmentGeneration"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.auth)").message("spec.auth is required: who may call the workers — apiKeysSecretRef and/or jwt, or mode: None for development only"))]
pub struct ChatAgentSpec {
    /// Number of worker pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Worker container image (default: the operator's own version of the worker image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// When the kubelet pulls the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// CPU and memory of each worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the worker pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Scheduling affinity of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra environment variables of the worker container. `MESHCHAT_*` names are refused:
    /// the operator sets those from this resource's fields (and a ChatAgent must not point the
    /// worker's credentials elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.all(e, !e.name.startsWith('MESHCHAT_'))").message("env must not set MESHCHAT_* variables: the operator sets them from the ChatAgent's fields"))]
    pub env: Option<Vec<EnvVar>>,
    /// Extra annotations on the worker pods (e.g. for a metrics scraper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Seconds a stopping worker gets to hand its partitions away (default: enough for the
    /// drain timeout plus the handoff grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Name the agent replies under.
    #[serde(default = "default_agent_name")]
    pub agent_name: String,
    /// Kafka connection and topics.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!has(self.sasl) || has(self.tls) || (has(self.allowPlaintextSasl) && self.allowPlaintextSasl)").message("sasl without tls sends the credentials in clear: add tls, or set allowPlaintextSasl: true"))]
    pub kafka: KafkaSpec,
    /// LLM endpoint and generation settings.
    #[serde(default)]
    pub llm: LlmSpec,
    /// Balancer policy.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.lowWatermark < self.highWatermark").message("lowWatermark must be below highWatermark"))]
    pub rebalance: RebalanceSpec,
    /// Load-driven replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Who may call the workers' public API (required: every route is authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.mode == 'None' || has(self.apiKeysSecretRef) || has(self.jwt)").message("auth needs apiKeysSecretRef and/or jwt (or mode: None, for development only)"))]
    pub auth: Option<AuthSpec>,
    /// Rate limits and quotas per user and tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

/// What one user or tenant may take from each worker (absent fields: the worker's defaults,
/// listed in docs/security.md). Over a limit, callers get 429 with `Retry-After`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Messages one user may send per minute (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub user_messages_per_minute: Option<u32>,
    /// Messages one user may send at once before the rate applies (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub user_message_burst: Option<u32>,
    /// Messages one tenant's users together may send per minute (default 1200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tenant_messages_per_minute: Option<u32>,
    /// A tenant's burst (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tenant_message_burst: Option<u32>,
    /// Reads (conversation views, live streams opened) one user may make per minute (default
    /// 1200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub user_reads_per_minute: Option<u32>,
    /// Live streams one user may hold open at once (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub user_streams: Option<u32>,
    /// Live streams one tenant may hold open at once (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tenant_streams: Option<u32>,
    /// Live streams one worker serves at once (default 20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub worker_streams: Option<u32>,
    /// LLM tokens (prompt and completion) one tenant's answers may use per minute (default
    /// 1000000; 0: no quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_llm_tokens_per_minute: Option<u64>,
    /// Seconds an answer waits for its tenant's token quota before it becomes an error reply
    /// saying so (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub quota_wait_seconds: Option<u32>,
    /// Unanswered messages one conversation may hold; beyond, a message gets an error reply
    /// (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_pending_per_conversation: Option<u32>,
    /// Records a conversation's worker may be behind (over all its partitions) before sends to
    /// it answer 503 with Retry-After instead of growing the backlog (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_backlog: Option<u32>,
    /// Requests (other than live streams) one worker serves at once; beyond, 503 (default
    /// 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests: Option<u32>,
    /// Participants one conversation may have (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_participants_per_conversation: Option<u32>,
}

/// Authentication of the workers' public API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// `Required` (every route needs a credential) or `None` (development only: everyone is an
    /// admin of the default tenant; the workers say so loudly).
    #[serde(default)]
    pub mode: AuthMode,
    /// Secret key holding the API keys file (JSON or YAML: tenant, user, role and the key's
    /// SHA-256 — never the key). Mounted into the workers, which pick up edits without a
    /// restart (within the kubelet's Secret sync, about a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret_ref: Option<SecretKeyRef>,
    /// JWTs from an identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Migrate requests a tenant may send per minute (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 6000))]
    pub migrate_per_minute: Option<u32>,
}

/// What a message does while a reply is being generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WhileReplying {
    /// It waits its turn.
    #[default]
    Enqueue,
    /// The reply under way is cancelled and the new message answered.
    Interrupt,
}

/// Whether the public API asks for credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AuthMode {
    /// Every public route needs a credential.
    #[default]
    Required,
    /// Nothing is checked (development only).
    None,
}

/// JWT verification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// The provider's JWKS URL (HS256, RS256 and ES256 keys are used).
    #[schemars(length(min = 1, max = 2048))]
    pub jwks_url: String,
    /// Required `iss`.
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: String,
    /// Required `aud`.
    #[schemars(length(min = 1, max = 1024))]
    pub audience: String,
    /// Claim naming the tenant (default `tenant`; dotted names reach into objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_claim: Option<String>,
    /// Claim naming the user (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// Claim naming the role: `user`, `admin` or `operator`, or a list (default `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub leeway_seconds: Option<u32>,
}

/// When the kubelet pulls the worker image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    /// Every start.
    Always,
    /// Only when missing on the node.
    IfNotPresent,
    /// Never (the image must be on the node).
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Kafka settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minInsyncReplicas <= self.replicationFactor").message("kafka.minInsyncReplicas cannot exceed kafka.replicationFactor: no write could be acknowledged"))]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list.
    #[serde(default = "default_bootstrap")]
    #[schemars(regex(pattern = r"^[^,\s]+:[0-9]{1,5}(,[^,\s]+:[0-9]{1,5})*$"))]
    pub bootstrap_servers: String,
    /// Prefix for every topic name (e.g. `team-a.`).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{0,64}$"))]
    pub topic_prefix: String,
    /// Partitions of `chat.messages` (and of `chat.conversations`, `chat.stream`,
    /// `chat.index`), fixed when the ChatAgent is created: Kafka cannot remove partitions, and
    /// a conversation lives on the partition its id hashes to, so a new count would move most
    /// conversations away from their history (a repartition MeshChat does not do yet).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("kafka.partitions cannot change once set: conversations are placed by partition (hash of the conversation id mod partitions), so another count would separate them from their history; create a new ChatAgent with its own topicPrefix instead"))]
    pub partitions: i32,
    /// Replicas of each topic the workers create (production clusters: 3). A cluster with
    /// fewer brokers cannot create the topics; the status says so (Degraded, TooFewBrokers).
    /// Existing topics keep theirs.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: i32,
    /// `min.insync.replicas` of those topics: writes (acks=all) are refused while fewer replicas
    /// are in sync, rather than acknowledged by too few to survive a broker's loss.
    #[serde(default = "default_min_insync_replicas")]
    #[schemars(range(min = 1, max = 32))]
    pub min_insync_replicas: i32,
    /// SASL authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
    /// TLS to the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Allow SASL without TLS (credentials in clear on the network; for a broker on a trusted
    /// network only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext_sasl: bool,
}

/// SASL authentication to Kafka.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// Secret with the username and password.
    pub credentials_secret_ref: CredentialsSecretRef,
}

/// SASL mechanisms librdkafka supports with a username and password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    /// Plain text (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A Secret holding a password, and a username (in the Secret, or given here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The username itself, when the Secret does not hold it: a Strimzi KafkaUser's Secret
    /// (named after the user) has only `password` and `sasl.jaas.config`, so the user's name
    /// goes here. `usernameKey` is then not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub username: Option<String>,
    /// Key of the username.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

/// TLS to Kafka.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret key holding the CA bundle (PEM) that signed the brokers' certificates; the
    /// system trust store when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A client certificate and key (PEM) the workers and the balancer present: mutual TLS, as
    /// a Strimzi KafkaUser with `authentication: tls` gets in its Secret (`user.crt`,
    /// `user.key`, the defaults here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<ClientCertSecretRef>,
}

/// A Secret holding a client certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertSecretRef {
    /// Secret name (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the certificate (chain).
    #[serde(default = "default_cert_key")]
    pub cert_key: String,
    /// Key of the private key.
    #[serde(default = "default_key_key")]
    pub key_key: String,
}

/// LLM settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    /// OpenAI-compatible base URL (OpenAI, vLLM, Ollama `/v1`).
    #[serde(default = "default_llm_url")]
    pub base_url: String,
    /// Model name.
    #[serde(default = "default_model")]
    pub model: String,
    /// Secret holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// System prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f32>,
    /// Maximum completion tokens per reply (a reply too large to store becomes an error reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131072))]
    pub max_tokens: Option<u32>,
    /// Token budget of the context sent to the LLM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64))]
    pub context_tokens: Option<u32>,
    /// Concurrent LLM calls per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub concurrency: Option<u32>,
    /// Per-call timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// What a user's message does while a reply to an earlier one of its conversation is being
    /// generated: `Enqueue` (default: it waits its turn) or `Interrupt` (that reply is
    /// cancelled, keeping its text so far, and the new message answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub while_replying: Option<WhileReplying>,
}

/// A key in a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// Balancer policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Seconds between balancing rounds.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Move partitions off workers above this load, onto workers below it that are more than 10 %
    /// cooler (when every worker is above it, moving load only reshuffles it: scale out instead).
    #[serde(default = "default_high")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub high_watermark: f64,
    /// Consolidate workers below this load when it frees a whole worker.
    #[serde(default = "default_low")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub low_watermark: f64,
    /// Cap on partition moves per round.
    #[serde(default = "default_max_moves")]
    #[schemars(range(min = 0))]
    pub max_moves_per_round: u32,
    /// Seconds a moved partition stays put.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: u32,
    /// Seconds without a heartbeat before a worker is declared dead.
    #[serde(default = "default_heartbeat_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub heartbeat_timeout_seconds: u32,
}

/// Load-driven replica count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Turns load-driven scaling on.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest workers.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most workers.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Mean load factor to aim for.
    #[serde(default = "default_target_load")]
    #[schemars(range(min = 0.05, max = 1.0))]
    pub target_load: f64,
    /// Seconds the load must stay low before replicas go down (scale-ups are immediate).
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: u32,
}

/// Observed state of a mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatAgentStatus {
    /// `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Worker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the workers (for /scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Generation of the published assignment table.
    #[serde(default)]
    pub assignment_generation: u64,
    /// Mean worker load factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// Partitions and load per worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerLoadStatus>,
    /// When the balancer last moved partitions (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebalance_time: Option<String>,
    /// Partition moves since the resource was created.
    #[serde(default)]
    pub migrations: u64,
    /// Ready, Progressing, Degraded, KafkaReachable (and ExternalAutoscaler with autoscaling
    /// on); one per type, a map keyed by it for server-side apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One worker in status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerLoadStatus {
    /// Worker id (pod name).
    pub name: String,
    /// Owned partitions.
    pub partitions: Vec<i32>,
    /// Load factor.
    pub load: f64,
}

fn default_replicas() -> i32 {
    3
}
fn default_agent_name() -> String {
    "meshchat-agent".into()
}
fn default_bootstrap() -> String {
    "kafka:9092".into()
}
fn default_partitions() -> i32 {
    24
}
fn default_replication_factor() -> i32 {
    3
}
fn default_min_insync_replicas() -> i32 {
    2
}
fn default_llm_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_model() -> String {
    "gpt-4o-mini".into()
}
fn default_interval() -> u32 {
    30
}
fn default_high() -> f64 {
    0.8
}
fn default_low() -> f64 {
    0.2
}
fn default_max_moves() -> u32 {
    16
}
fn default_cooldown() -> u32 {
    120
}
fn default_heartbeat_timeout() -> u32 {
    5
}
fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_load() -> f64 {
    0.6
}
fn default_scale_down_window() -> u32 {
    300
}
fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}
fn default_cert_key() -> String {
    "user.crt".into()
}
fn default_key_key() -> String {
    "user.key".into()
}

impl Default for KafkaSpec {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            topic_prefix: String::new(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            min_insync_replicas: default_min_insync_replicas(),
            sasl: None,
            tls: None,
            allow_plaintext_sasl: false,
        }
    }
}

impl Default for LlmSpec {
    fn default() -> Self {
        Self {
            base_url: default_llm_url(),
            model: default_model(),
            api_key_secret_ref: None,
            system_prompt: None,
            temperature: None,
            max_tokens: None,
            context_tokens: None,
            concurrency: None,
            timeout_seconds: None,
            while_replying: None,
        }
    }
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval(),
            high_watermark: default_high(),
            low_watermark: default_low(),
            max_moves_per_round: default_max_moves(),
            cooldown_seconds: default_cooldown(),
            heartbeat_timeout_seconds: default_heartbeat_timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// The checked-in CRD must be what `crdgen` writes today.
    #[test]
    fn checked_in_crd_is_fresh() {
        let want = crate::crd_yaml().expect("render CRD");
        // relative to the package root, where `cargo test` runs us: a test binary reused from a
        // cached target dir built in another checkout must still read this checkout's files
        for path in ["chatagent.crd.yaml", "../charts/meshchat/crds/chatagent.crd.yaml"] {
            let have = std::fs::read_to_string(path).unwrap_or_default();
            assert!(have == want, "{path} is stale: run `make crds` and commit it");
        }
    }

    #[test]
    fn crd_has_status_scale_and_columns() {
        let crd = ChatAgent::crd();
        let version = &crd.spec.versions[0];
        let sub = version.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
        let cols: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["Replicas", "Ready", "Workers", "Load", "Generation", "Age"]
        );
        assert_eq!(crd.spec.names.categories, Some(vec!["meshchat".to_string()]));
        let yaml = crate::crd_yaml().expect("render CRD");
        assert!(!yaml.contains("format: uint"), "formats Kubernetes knows only");
        // and a u32 field keeps its width's bound, or its own tighter one
        let crd = crate::crd();
        let spec = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref()?.properties.as_ref()?.get("spec"));
        let field = |group: &str, name: &str| {
            spec.and_then(|s| s.properties.as_ref()?.get(group)?.properties.as_ref()?.get(name))
                .cloned()
                .unwrap_or_else(|| panic!("spec.{group}.{name}"))
        };
        let burst = field("limits", "tenantMessageBurst");
        assert_eq!(burst.format.as_deref(), Some("int64"));
        assert_eq!(burst.maximum, Some(f64::from(u32::MAX)));
        assert_eq!(field("rebalance", "intervalSeconds").maximum, Some(3600.0));
    }

    #[test]
    fn manifest_defaults_apply() {
        let spec: ChatAgentSpec = serde_json::from_str("{}").expect("empty spec");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.kafka.partitions, 24);
        assert_eq!(
            (spec.kafka.replication_factor, spec.kafka.min_insync_replicas),
            (3, 2)
        );
        assert_eq!(spec.rebalance.high_watermark, 0.8);
    }
}
