//! What the operator tells a worker, and how it reaches it: the HTTP port and the paths its probes
//! and preStop hook call, the environment variables it sets, and the configuration file it
//! renders ([`WorkerFile`], whose keys are the worker's long option names). The worker's own
//! flags take their names and defaults from here, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// The port a worker serves HTTP on (REST, WebSocket, SSE, probes, metrics).
pub const HTTP_PORT: u16 = 8080;
/// The container port's name, which probes and Services refer to.
pub const HTTP_PORT_NAME: &str = "http";

/// HTTP paths the platform calls.
pub mod paths {
    /// Liveness: the process serves HTTP.
    pub const LIVENESS: &str = "/healthz";
    /// Readiness: Kafka reachable, owned partitions caught up, live fan-out assigned.
    pub const READINESS: &str = "/readyz";
    /// The preStop hook: drain, answer once every partition is handed over.
    pub const DRAIN: &str = "/drain";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
}

/// Environment variables the operator sets on a worker.
pub mod env {
    /// Worker id (the pod name).
    pub const NODE_ID: &str = "MESHCHAT_NODE_ID";
    /// The URL peers reach the worker on.
    pub const ADVERTISE_URL: &str = "MESHCHAT_ADVERTISE_URL";
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
}

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
