//! The `ChatAgent` custom resource: one mesh of chat workers and its balancer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a MeshChat mesh.
// several `printcolumn(type_ = ...)` entries look like duplicates to clippy
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "meshchat.io",
    version = "v1alpha1",
    kind = "ChatAgent",
    namespaced,
    status = "ChatAgentStatus",
    shortname = "chat",
    derive = "PartialEq",
    doc = "A mesh of MeshChat workers serving LLM chat, balanced by the MeshChat operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Load", type_ = "number", json_path = ".status.load"),
    printcolumn(
        name = "Generation",
        type_ = "integer",
        json_path = ".status.assignmentGeneration"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ChatAgentSpec {
    /// Number of worker pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Worker container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Name the agent replies under.
    #[serde(default = "default_agent_name")]
    pub agent_name: String,
    /// Kafka connection and topics.
    #[serde(default)]
    pub kafka: KafkaSpec,
    /// LLM endpoint and generation settings.
    #[serde(default)]
    pub llm: LlmSpec,
    /// Balancer policy.
    #[serde(default)]
    pub rebalance: RebalanceSpec,
    /// Load-driven replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// Kafka settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Prefix for every topic name (e.g. `team-a.`).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{0,64}$"))]
    pub topic_prefix: String,
    /// Partitions of `chat.messages` (and of `chat.conversations`, `chat.stream`).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 4096))]
    pub partitions: i32,
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
    /// Maximum completion tokens per reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
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
    /// Move partitions off workers above this load.
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
    /// Ready, Progressing, Degraded, KafkaReachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

impl Default for KafkaSpec {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            topic_prefix: String::new(),
            partitions: default_partitions(),
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
        assert_eq!(cols, ["Replicas", "Ready", "Load", "Generation", "Age"]);
    }

    #[test]
    fn manifest_defaults_apply() {
        let spec: ChatAgentSpec = serde_json::from_str("{}").expect("empty spec");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.kafka.partitions, 24);
        assert_eq!(spec.rebalance.high_watermark, 0.8);
    }
}
