//! What the operator tells a worker, and how it reaches it: the HTTP port and the paths its probes
//! and preStop hook call, the environment variables it sets, and the configuration file it
//! renders ([`WorkerFile`], whose keys are the worker's long option names). The worker's own
//! flags take their names and defaults from here, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// The port a worker serves its public API on (REST, WebSocket, SSE).
pub const HTTP_PORT: u16 = 8080;
/// The public container port's name, which the client Service refers to.
pub const HTTP_PORT_NAME: &str = "http";
/// The port of what only the mesh and the kubelet use: probes, metrics, the drain, peers'
/// forwarded reads. Never the clients'.
pub const INTERNAL_PORT: u16 = 9080;
/// The internal container port's name, which probes and the peers' Service refer to.
pub const INTERNAL_PORT_NAME: &str = "internal";

/// HTTP paths of the internal listener.
pub mod paths {
    /// Liveness: the process serves HTTP.
    pub const LIVENESS: &str = "/healthz";
    /// Readiness: Kafka reachable, owned partitions caught up, live fan-out assigned.
    pub const READINESS: &str = "/readyz";
    /// The preStop hook: drain, answer once every partition is handed over.
    pub const DRAIN: &str = "/drain";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// A peer's read of a conversation it does not own, by key (`GET {FORWARDED_READ}/{key}`).
    pub const FORWARDED_READ: &str = "/internal/conversation";
    /// Whether a user takes part in a conversation, asked of its owner
    /// (`GET {MEMBERSHIP}/{key}?user=…`).
    pub const MEMBERSHIP: &str = "/internal/membership";
    /// A conversation's live events, relayed to a peer whose clients watch it:
    /// `GET /internal/live/{tenant}/{id}?after=<event id>` (SSE).
    pub const LIVE_RELAY: &str = "/internal/live";
}

/// Environment variables the operator sets on a worker.
pub mod env {
    /// Worker id (the pod name).
    pub const NODE_ID: &str = "MESHCHAT_NODE_ID";
    /// The URL clients reach the worker's public API on.
    pub const ADVERTISE_URL: &str = "MESHCHAT_ADVERTISE_URL";
    /// The URL peers reach the worker's internal listener on.
    pub const INTERNAL_ADVERTISE_URL: &str = "MESHCHAT_INTERNAL_ADVERTISE_URL";
    /// The secret peers present to each other's internal listener (from a Secret).
    pub const MESH_SECRET: &str = "MESHCHAT_MESH_SECRET";
    /// `required` or `none` (development only).
    pub const AUTH: &str = "MESHCHAT_AUTH";
    /// API keys file (hashes only).
    pub const API_KEYS_FILE: &str = "MESHCHAT_API_KEYS_FILE";
    /// JWKS file.
    pub const JWKS_FILE: &str = "MESHCHAT_JWKS_FILE";
    /// JWKS URL.
    pub const JWKS_URL: &str = "MESHCHAT_JWKS_URL";
    /// Required JWT issuer.
    pub const JWT_ISSUER: &str = "MESHCHAT_JWT_ISSUER";
    /// Required JWT audience.
    pub const JWT_AUDIENCE: &str = "MESHCHAT_JWT_AUDIENCE";
    /// `text` or `json`.
    pub const LOG_FORMAT: &str = "MESHCHAT_LOG_FORMAT";
    /// The LLM API key (from a Secret).
    pub const LLM_API_KEY: &str = "MESHCHAT_LLM_API_KEY";
    /// SASL username (from a Secret).
    pub const KAFKA_SASL_USERNAME: &str = "MESHCHAT_KAFKA_SASL_USERNAME";
    /// SASL password (from a Secret).
    pub const KAFKA_SASL_PASSWORD: &str = "MESHCHAT_KAFKA_SASL_PASSWORD";
    /// The configuration file.
    pub const CONFIG: &str = "MESHCHAT_CONFIG";
}

/// Where the rendered configuration is mounted in a worker pod.
pub const CONFIG_DIR: &str = "/etc/meshchat";
/// The rendered configuration's file name (and ConfigMap key).
pub const CONFIG_FILE: &str = "worker.yaml";

/// Seconds a SIGTERM'd worker waits for the balancer to move its partitions away.
pub const DRAIN_TIMEOUT_SECS: u32 = 20;
/// Seconds in-flight answers may take on shutdown before they are left to the next owner.
pub const SHUTDOWN_GRACE_SECS: u32 = 10;
/// Seconds a stopping worker needs after its grace (final snapshots, commit, producer flush).
pub const FINAL_COMMIT_SECS: u32 = 5;

/// The pod's termination grace period for a worker configured with `file`: the drain, the
/// in-flight answers' grace, then the final commit.
pub fn termination_grace_secs(file: &WorkerFile) -> i64 {
    let drain = file.drain_timeout_secs.unwrap_or(DRAIN_TIMEOUT_SECS);
    let grace = file.shutdown_grace_secs.unwrap_or(SHUTDOWN_GRACE_SECS);
    i64::from(drain) + i64::from(grace) + i64::from(FINAL_COMMIT_SECS)
}

/// Where a worker's partitions come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Fixed by configuration (`--owned-partitions`, `--peers`).
    #[default]
    Static,
    /// The balancer's assignment table on `chat.assignments`.
    Dynamic,
}

impl Ownership {
    /// The option value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dynamic => "dynamic",
        }
    }
}

impl std::fmt::Display for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user's message does while a reply to an earlier one of its conversation is being
/// generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WhileReplying {
    /// It waits its turn: replies come one at a time, in order.
    #[default]
    Enqueue,
    /// The reply under way (and any not begun) is cancelled with its text so far, and the new
    /// message answered.
    Interrupt,
}

/// A worker's log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (what log collectors want).
    Json,
}

impl LogFormat {
    /// The option value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The configuration file the operator renders into a worker's ConfigMap. Keys are the worker's
/// long option names; absent ones keep the worker's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WorkerFile {
    /// Always dynamic on Kubernetes: the operator's balancer assigns partitions.
    pub ownership: Ownership,
    /// Key of the mesh's assignment table (`namespace/name`).
    pub agent: String,
    /// Sender name of replies.
    pub agent_name: String,
    /// Kafka bootstrap servers.
    pub kafka_bootstrap: String,
    /// Prefix of every topic.
    pub topic_prefix: String,
    /// Partitions when creating topics.
    pub partitions: i32,
    /// Replication factor of the topics the workers create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of the topics the workers create (writes are acknowledged by all
    /// in-sync replicas: with fewer than this many, producers are refused rather than lose data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<i32>,
    /// Extra librdkafka settings, `key=value` comma-separated (SASL mechanism, TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_properties: Option<String>,
    /// See [`DRAIN_TIMEOUT_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_secs: Option<u32>,
    /// See [`SHUTDOWN_GRACE_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u32>,
    /// OpenAI-compatible base URL.
    pub llm_base_url: String,
    /// Model name.
    pub llm_model: String,
    /// System prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_temperature: Option<f64>,
    /// Completion tokens per reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_max_tokens: Option<u32>,
    /// Context budget in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u32>,
    /// LLM calls in flight per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_concurrency: Option<u32>,
    /// Seconds per LLM attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_timeout_secs: Option<u32>,
    /// What a message does while a reply is being generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub while_replying: Option<WhileReplying>,
    /// `required` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The mounted API keys file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<String>,
    /// JWKS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Required JWT issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    /// Required JWT audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// Tenant claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_tenant_claim: Option<String>,
    /// User claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_user_claim: Option<String>,
    /// Role claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_role_claim: Option<String>,
    /// Leeway on `exp`/`nbf`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_leeway_secs: Option<u32>,
    /// Migrate requests per tenant and minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_per_minute: Option<u32>,
    /// What callers and tenants may take.
    #[serde(flatten)]
    pub limits: LimitsFile,
}

/// The limits' options of [`WorkerFile`] (absent: the worker's defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LimitsFile {
    /// Messages per user and minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_messages_per_minute: Option<u32>,
    /// A user's burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message_burst: Option<u32>,
    /// Messages per tenant and minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_messages_per_minute: Option<u32>,
    /// A tenant's burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_message_burst: Option<u32>,
    /// Reads per user and minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_reads_per_minute: Option<u32>,
    /// Live streams per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_streams: Option<u32>,
    /// Live streams per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_streams: Option<u32>,
    /// Live streams per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_streams: Option<u32>,
    /// LLM tokens per tenant and minute (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_llm_tokens_per_minute: Option<u64>,
    /// Seconds an answer waits for its tenant's token quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_wait_secs: Option<u32>,
    /// Unanswered messages per conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_per_conversation: Option<u32>,
    /// Participants per conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants_per_conversation: Option<u32>,
    /// Requests in flight per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Records a worker may be behind before sends to it are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backlog: Option<u32>,
}

/// Where the operator mounts a ChatAgent's API keys file in a worker.
pub const API_KEYS_DIR: &str = "/etc/meshchat/auth";
/// The API keys file's name in [`API_KEYS_DIR`].
pub const API_KEYS_FILE: &str = "api-keys";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_uses_option_names_and_leaves_unset_options_out() {
        let file = WorkerFile {
            ownership: Ownership::Dynamic,
            agent: "ns/a".into(),
            partitions: 24,
            drain_timeout_secs: Some(30),
            ..WorkerFile::default()
        };
        let text = serde_saphyr::to_string(&file).expect("yaml");
        assert!(text.contains("ownership: dynamic"), "{text}");
        assert!(text.contains("drain-timeout-secs: 30"), "{text}");
        assert!(!text.contains("system-prompt"), "{text}");
        let back: WorkerFile = serde_saphyr::from_str(&text).expect("parse");
        assert_eq!(back, file);
        assert_eq!(termination_grace_secs(&file), 30 + 10 + 5);
    }
}
