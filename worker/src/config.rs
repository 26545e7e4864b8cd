//! The worker's configuration: one struct, from flags, `MESHCHAT_*` environment variables and
//! an optional YAML file (`--config`). Precedence: flag > environment > file > default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use meshchat_wire::worker::{self, LogFormat, Ownership, WhileReplying, env};

use crate::tokenizer::Encoding;

/// MeshChat worker: serves chat over REST, WebSocket and SSE and answers with an LLM.
#[derive(Clone, Debug, Parser)]
#[command(name = "meshchat-worker", version, args_override_self = true)]
pub struct Config {
    /// YAML file whose keys are the long option names below (e.g. `llm-model: gpt-4o`).
    #[arg(long, env = env::CONFIG)]
    pub config: Option<String>,

    /// This worker's id (stable across restarts; the pod name on Kubernetes).
    #[arg(long, env = env::NODE_ID, default_value = "meshchat-node-0")]
    pub node_id: String,
    /// Address the HTTP server listens on.
    #[arg(long, env = "MESHCHAT_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], worker::HTTP_PORT)))]
    pub listen: SocketAddr,
    /// Base URL clients reach the public API on (default: http://<listen>).
    #[arg(long, env = env::ADVERTISE_URL)]
    pub advertise_url: Option<String>,
    /// Address of the internal listener: probes, metrics, the drain and peers' forwarded reads
    /// (never clients').
    #[arg(long, env = "MESHCHAT_INTERNAL_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], worker::INTERNAL_PORT)))]
    pub internal_listen: SocketAddr,
    /// Base URL peers reach the internal listener on (default: http://<internal-listen>).
    #[arg(long, env = env::INTERNAL_ADVERTISE_URL)]
    pub internal_advertise_url: Option<String>,
    /// Secret peers present to each other's internal listener (forwarded reads, the drain from
    /// outside the pod); without it only the network guards the internal port.
    #[arg(long, env = env::MESH_SECRET, hide_env_values = true)]
    pub mesh_secret: Option<String>,
    /// Name agent replies carry as sender.
    #[arg(long, env = "MESHCHAT_AGENT_NAME", default_value = "meshchat-agent")]
    pub agent_name: String,

    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "MESHCHAT_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub kafka_bootstrap: String,
    /// Prefix for every topic name, so several meshes can share a broker.
    #[arg(long, env = "MESHCHAT_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Partitions of chat.messages, chat.conversations and chat.stream when creating them.
    #[arg(long, env = "MESHCHAT_PARTITIONS", default_value_t = 24, value_parser = clap::value_parser!(i32).range(1..=4096))]
    pub partitions: i32,
    /// Replication factor when creating topics.
    #[arg(long, env = "MESHCHAT_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=32))]
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics this worker creates (default: the broker's). With
    /// acks=all, a write is refused while fewer replicas are in sync, rather than acknowledged
    /// by too few to survive a broker's loss.
    #[arg(long, env = "MESHCHAT_MIN_INSYNC_REPLICAS", value_parser = clap::value_parser!(i32).range(1..=32))]
    pub min_insync_replicas: Option<i32>,
    /// Extra librdkafka settings, `key=value` comma-separated (e.g. security.protocol=SASL_SSL).
    #[arg(long, env = "MESHCHAT_KAFKA_PROPERTIES", default_value = "", value_parser = KafkaProperties::parse)]
    pub kafka_properties: KafkaProperties,
    /// SASL username (the mechanism and `security.protocol` go in kafka-properties).
    #[arg(long, env = env::KAFKA_SASL_USERNAME)]
    pub kafka_sasl_username: Option<String>,
    /// SASL password.
    #[arg(long, env = env::KAFKA_SASL_PASSWORD, hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,

    /// Partitions this worker owns: `all`, or a list like `0-7,12`.
    #[arg(long, env = "MESHCHAT_OWNED_PARTITIONS", default_value = "all")]
    pub owned_partitions: String,
    /// Other workers' internal listeners and what they own, for forwarding reads:
    /// `node-1=http://10.0.0.2:9080|8-15;node-2=http://10.0.0.3:9080|16-23`.
    #[arg(long, env = "MESHCHAT_PEERS", default_value = "")]
    pub peers: String,

    /// Where ownership comes from: `static` (--owned-partitions) or `dynamic` (the balancer's
    /// assignment table on chat.assignments, which also sets the heartbeat timeout).
    #[arg(long, env = "MESHCHAT_OWNERSHIP", value_enum, default_value_t = Ownership::Static)]
    pub ownership: Ownership,
    /// ChatAgent name: the key of this mesh's assignment table.
    #[arg(long, env = "MESHCHAT_AGENT", default_value = "meshchat")]
    pub agent: String,
    /// Milliseconds between load reports on chat.events.
    #[arg(long, env = "MESHCHAT_HEARTBEAT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub heartbeat_ms: u64,
    /// Seconds in-flight answers of a partition being handed away may take.
    #[arg(long, env = "MESHCHAT_HANDOFF_GRACE_SECS", default_value_t = 2.0, value_parser = seconds)]
    pub handoff_grace_secs: f64,
    /// Seconds a new owner waits for the old owner's release before fencing it out.
    #[arg(long, env = "MESHCHAT_RELEASE_TIMEOUT_SECS", default_value_t = 5.0, value_parser = seconds)]
    pub release_timeout_secs: f64,
    /// Seconds a SIGTERM'd worker (dynamic mode) waits for the balancer to move its partitions.
    #[arg(long, env = "MESHCHAT_DRAIN_TIMEOUT_SECS", default_value_t = f64::from(worker::DRAIN_TIMEOUT_SECS), value_parser = seconds)]
    pub drain_timeout_secs: f64,

    /// OpenAI-compatible base URL (OpenAI, vLLM, Ollama's /v1).
    #[arg(
        long,
        env = "MESHCHAT_LLM_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub llm_base_url: String,
    /// Model name.
    #[arg(long, env = "MESHCHAT_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// API key (falls back to OPENAI_API_KEY).
    #[arg(long, env = env::LLM_API_KEY, hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// System prompt.
    #[arg(
        long,
        env = "MESHCHAT_SYSTEM_PROMPT",
        default_value = "You are a helpful assistant in a team chat. Answer concisely."
    )]
    pub system_prompt: String,
    /// Sampling temperature.
    #[arg(long, env = "MESHCHAT_LLM_TEMPERATURE")]
    pub llm_temperature: Option<f32>,
    /// Maximum completion tokens per reply.
    #[arg(long, env = "MESHCHAT_LLM_MAX_TOKENS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=131_072))]
    pub llm_max_tokens: u32,
    /// Token budget for the context sent with each call (system prompt included).
    #[arg(long, env = "MESHCHAT_CONTEXT_TOKENS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub context_tokens: u32,
    /// Tokenizer used to count context tokens.
    #[arg(long, env = "MESHCHAT_TOKENIZER", value_enum, default_value_t = Encoding::Cl100kBase)]
    pub tokenizer: Encoding,
    /// Seconds one LLM attempt may take, and may stall between two streamed chunks.
    #[arg(long, env = "MESHCHAT_LLM_TIMEOUT_SECS", default_value_t = 60.0, value_parser = positive_seconds)]
    pub llm_timeout_secs: f64,
    /// Retries after a failed LLM attempt (timeouts, 5xx, 429, refused connections).
    #[arg(long, env = "MESHCHAT_LLM_RETRIES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub llm_retries: u32,
    /// First retry delay in milliseconds; doubles per retry, with jitter.
    #[arg(long, env = "MESHCHAT_LLM_BACKOFF_MS", default_value_t = 250)]
    pub llm_backoff_ms: u64,
    /// Concurrent LLM calls on this worker.
    #[arg(long, env = "MESHCHAT_LLM_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_concurrency: u32,

    /// Largest message content, in bytes.
    #[arg(long, env = "MESHCHAT_MAX_CONTENT_BYTES", default_value_t = 32 * 1024, value_parser = at_least_one)]
    pub max_content_bytes: usize,
    /// Messages kept per conversation in memory and in snapshots.
    #[arg(long, env = "MESHCHAT_HISTORY_LIMIT", default_value_t = 200, value_parser = at_least_one)]
    pub history_limit: usize,
    /// Unanswered messages one conversation may hold; a message beyond gets an error reply
    /// (kind `limit`) instead of an answer.
    #[arg(long, env = "MESHCHAT_MAX_PENDING_PER_CONVERSATION", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_pending_per_conversation: u32,
    /// Participants one conversation may have; a new sender beyond gets an error reply and an
    /// addition beyond is ignored.
    #[arg(long, env = "MESHCHAT_MAX_PARTICIPANTS_PER_CONVERSATION", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_participants_per_conversation: u32,
    /// Seconds a conversation may stay idle before it leaves memory (it comes back from its
    /// snapshot on its next message or read).
    #[arg(long, env = "MESHCHAT_IDLE_EVICT_SECS", default_value_t = 600.0, value_parser = positive_seconds)]
    pub idle_evict_secs: f64,
    /// Most conversations a worker holds in memory; the least recently active beyond leave
    /// (once their snapshot is written).
    #[arg(long, env = "MESHCHAT_MAX_RESIDENT_CONVERSATIONS", default_value_t = 100_000, value_parser = at_least_one)]
    pub max_resident_conversations: usize,
    /// Answers under way (waiting for an LLM slot, streaming, being written) beyond which the
    /// owner stops reading new messages: they wait in Kafka, so memory stays bounded however
    /// fast messages come.
    #[arg(long, env = "MESHCHAT_MAX_QUEUED_ANSWERS", default_value_t = 4096, value_parser = at_least_one)]
    pub max_queued_answers: usize,
    /// Largest snapshot record, in bytes; also what one conversation's history may take in
    /// memory. Older history stays in the log. Must stay under the broker's and producer's
    /// record limits (1 MB by default).
    #[arg(long, env = "MESHCHAT_SNAPSHOT_MAX_BYTES", default_value_t = 768 * 1024, value_parser = clap::value_parser!(u32).range(16_384..=67_108_864))]
    pub snapshot_max_bytes: u32,
    /// Seconds between snapshot + offset-commit rounds.
    #[arg(long, env = "MESHCHAT_SNAPSHOT_INTERVAL_SECS", default_value_t = 5.0, value_parser = positive_seconds)]
    pub snapshot_interval_secs: f64,
    /// Milliseconds the owner's and the fan-out's fetches may wait to gather records (0: a
    /// fetch returns with the first record). Trades up to this much latency per hop for less
    /// broker and worker CPU per message; docs/benchmarks.md has the measurements.
    #[arg(long, env = "MESHCHAT_FETCH_BATCH_MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub fetch_batch_ms: u32,
    /// Least milliseconds between two streamed pieces of one reply (0: every token as it
    /// arrives). Tokens arriving meanwhile leave together, so a reply costs fewer chunk
    /// records; no token waits longer than this.
    #[arg(long, env = "MESHCHAT_CHUNK_INTERVAL_MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub chunk_interval_ms: u32,
    /// Seconds in-flight replies may take to finish on shutdown before they are left to the
    /// next owner.
    #[arg(long, env = "MESHCHAT_SHUTDOWN_GRACE_SECS", default_value_t = f64::from(worker::SHUTDOWN_GRACE_SECS), value_parser = seconds)]
    pub shutdown_grace_secs: f64,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OpenTelemetry collector's OTLP/HTTP base URL (e.g. `http://otel-collector:4318`):
    /// traces are exported when set (or when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is), off
    /// otherwise. The other `OTEL_*` variables are honoured.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// What a user's message does while a reply to an earlier one of its conversation is being
    /// generated: `enqueue` (it waits its turn) or `interrupt` (that reply is cancelled, keeping
    /// its text so far, and the new message answered).
    #[arg(long, env = "MESHCHAT_WHILE_REPLYING", value_enum, default_value_t = WhileReplying::Enqueue)]
    pub while_replying: WhileReplying,
    /// `required`: every public route needs a bearer credential (API key or JWT). `none`: no
    /// credential is asked for and every caller is an admin of the default tenant — for
    /// development only; the worker says so at start and on /api/agent/status.
    #[arg(long, env = env::AUTH, value_enum, default_value_t = AuthMode::Required)]
    pub auth: AuthMode,
    /// API keys file (JSON or YAML, SHA-256 hashes only), re-read when it changes.
    #[arg(long, env = env::API_KEYS_FILE)]
    pub api_keys_file: Option<std::path::PathBuf>,
    /// JWKS file with the keys JWTs are signed with (HS256, RS256, ES256), re-read when it
    /// changes.
    #[arg(long, env = env::JWKS_FILE, conflicts_with = "jwks_url")]
    pub jwks_file: Option<std::path::PathBuf>,
    /// JWKS URL (refetched every 5 minutes and when a token names an unknown key id).
    #[arg(long, env = env::JWKS_URL)]
    pub jwks_url: Option<String>,
    /// The `iss` a JWT must carry.
    #[arg(long, env = env::JWT_ISSUER)]
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry.
    #[arg(long, env = env::JWT_AUDIENCE)]
    pub jwt_audience: Option<String>,
    /// The claim naming the tenant (dotted names reach into objects).
    #[arg(long, env = "MESHCHAT_JWT_TENANT_CLAIM", default_value = "tenant")]
    pub jwt_tenant_claim: String,
    /// The claim naming the user.
    #[arg(long, env = "MESHCHAT_JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,
    /// The claim naming the role (a string or a list; `user` when absent).
    #[arg(long, env = "MESHCHAT_JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,
    /// Seconds of clock skew allowed on a JWT's `exp` and `nbf`.
    #[arg(long, env = "MESHCHAT_JWT_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_secs: u64,
    /// Migrate requests a tenant may send per minute (bursts up to a third of it).
    #[arg(long, env = "MESHCHAT_MIGRATE_PER_MINUTE", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=6000))]
    pub migrate_per_minute: u32,

    /// Messages one user may send per minute (on this worker).
    #[arg(long, env = "MESHCHAT_USER_MESSAGES_PER_MINUTE", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub user_messages_per_minute: u32,
    /// Messages one user may send at once before the per-minute rate applies.
    #[arg(long, env = "MESHCHAT_USER_MESSAGE_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub user_message_burst: u32,
    /// Messages one tenant's users together may send per minute (on this worker).
    #[arg(long, env = "MESHCHAT_TENANT_MESSAGES_PER_MINUTE", default_value_t = 1200, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_messages_per_minute: u32,
    /// Messages one tenant may send at once before its per-minute rate applies.
    #[arg(long, env = "MESHCHAT_TENANT_MESSAGE_BURST", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_message_burst: u32,
    /// Reads (conversation views, live streams opened) one user may make per minute.
    #[arg(long, env = "MESHCHAT_USER_READS_PER_MINUTE", default_value_t = 1200, value_parser = clap::value_parser!(u32).range(1..))]
    pub user_reads_per_minute: u32,
    /// Live streams (WebSocket, SSE) one user may hold open at once on this worker.
    #[arg(long, env = "MESHCHAT_USER_STREAMS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub user_streams: u32,
    /// Live streams one tenant may hold open at once on this worker.
    #[arg(long, env = "MESHCHAT_TENANT_STREAMS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_streams: u32,
    /// Live streams this worker serves at once.
    #[arg(long, env = "MESHCHAT_WORKER_STREAMS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_streams: u32,
    /// LLM tokens (prompt and completion) one tenant's answers may use per minute on this
    /// worker (0: no quota).
    #[arg(
        long,
        env = "MESHCHAT_TENANT_LLM_TOKENS_PER_MINUTE",
        default_value_t = 1_000_000
    )]
    pub tenant_llm_tokens_per_minute: u64,
    /// Seconds an answer waits for its tenant's token quota before it becomes an error reply.
    #[arg(long, env = "MESHCHAT_QUOTA_WAIT_SECS", default_value_t = 10.0, value_parser = seconds)]
    pub quota_wait_secs: f64,
    /// Requests (other than live streams) this worker serves at once; beyond, 503 at once.
    #[arg(long, env = "MESHCHAT_MAX_REQUESTS", default_value_t = 4096, value_parser = at_least_one)]
    pub max_requests: usize,
    /// Records a conversation's owner may be behind, over all its partitions, before sends to it
    /// answer 503 (retry later) instead of growing the backlog.
    #[arg(long, env = "MESHCHAT_MAX_BACKLOG", default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_backlog: i64,
    /// Largest WebSocket message a client may send; a larger one closes its socket.
    #[arg(long, env = "MESHCHAT_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = at_least_one)]
    pub ws_max_message_bytes: usize,
    /// Seconds between the worker's pings on a WebSocket; a client that answers none of two
    /// is gone and its socket is closed.
    #[arg(long, env = "MESHCHAT_WS_PING_SECS", default_value_t = 20.0, value_parser = positive_seconds)]
    pub ws_ping_secs: f64,
}

/// `--auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every public route needs a credential.
    Required,
    /// Nothing is checked (development only).
    None,
}

/// `--kafka-properties`: extra librdkafka settings as pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub Vec<(String, String)>);

impl KafkaProperties {
    fn parse(text: &str) -> Result<Self, String> {
        meshchat_wire::kafka::parse_properties(text).map(Self)
    }
}

impl std::fmt::Display for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(","))
    }
}

/// `http://<addr>`, loopback for an unspecified address.
fn url_of(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

/// A non-negative, finite number of seconds.
fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a non-negative number of seconds")),
    }
}

/// A positive, finite number of seconds.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match seconds(text) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// A count of at least one.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

/// A configuration error, naming the option.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// File path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// An option has a bad value.
    #[error("--{option}: {reason}")]
    Invalid {
        /// Long option name.
        option: String,
        /// What is wrong.
        reason: String,
    },
    /// Flag parsing failed otherwise (includes --help and --version).
    #[error(transparent)]
    Clap(clap::Error),
}

impl From<clap::Error> for ConfigError {
    /// A bad value of one option names the option, as every other configuration error does;
    /// the rest (unknown flags, --help) stays clap's, which prints usage.
    fn from(e: clap::Error) -> Self {
        if !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
            return Self::Clap(e);
        }
        let text = |kind| match e.get(kind) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            Some(ContextValue::Strings(v)) => Some(v.join(", ")),
            _ => None,
        };
        let Some(arg) = text(ContextKind::InvalidArg) else {
            return Self::Clap(e);
        };
        let option = arg
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_start_matches("--")
            .to_string();
        let value = text(ContextKind::InvalidValue).unwrap_or_default();
        let reason = match (std::error::Error::source(&e), text(ContextKind::ValidValue)) {
            (Some(cause), _) => cause.to_string(),
            (None, Some(valid)) => format!("{value:?} is not one of: {valid}"),
            (None, None) => format!("invalid value {value:?}"),
        };
        Self::Invalid { option, reason }
    }
}

/// A peer worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Worker id.
    pub node_id: String,
    /// Base URL of its internal listener.
    pub url: String,
    /// Partitions it owns.
    pub partitions: Vec<i32>,
}

// === impl Config ===

impl Config {
    /// Reads flags and environment, then fills what they leave unset from `--config`.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(
            std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        )
    }

    /// Like [`Config::load`] with explicit arguments (the first is the program name).
    pub fn load_from(args: Vec<String>) -> Result<Self, ConfigError> {
        let first = Config::try_parse_from(&args)?;
        let Some(path) = first.config.clone() else {
            return first.checked();
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let file: BTreeMap<String, serde_saphyr_value::Scalar> =
            serde_saphyr_value::parse(&text).map_err(|reason| ConfigError::File {
                path: path.clone(),
                reason,
            })?;
        let command = Config::command();
        let mut merged = vec![args.first().cloned().unwrap_or_default()];
        for (key, value) in file {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .ok_or_else(|| ConfigError::File {
                    path: path.clone(),
                    reason: format!("unknown option {key:?}"),
                })?;
            let env_set = arg.get_env().is_some_and(|name| std::env::var_os(name).is_some());
            if !env_set {
                merged.push(format!("--{key}={}", value.0));
            }
        }
        merged.extend(args.into_iter().skip(1));
        Config::try_parse_from(merged)?.checked()
    }

    fn checked(self) -> Result<Self, ConfigError> {
        check_values(&self)?;
        Ok(self)
    }

    /// Where traces go.
    pub fn trace_settings(&self) -> crate::telemetry::TraceSettings {
        crate::telemetry::TraceSettings {
            endpoint: self.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            node_id: self.node_id.clone(),
        }
    }

    /// URL peers reach this worker on.
    pub fn advertise_url(&self) -> String {
        self.advertise_url.clone().unwrap_or_else(|| url_of(self.listen))
    }

    /// URL peers reach the internal listener on.
    pub fn internal_advertise_url(&self) -> String {
        self.internal_advertise_url
            .clone()
            .unwrap_or_else(|| url_of(self.internal_listen))
    }

    /// The LLM API key, from the option or OPENAI_API_KEY.
    pub fn api_key(&self) -> String {
        self.llm_api_key
            .clone()
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .unwrap_or_default()
    }

    /// Partitions this worker owns out of `total`.
    pub fn owned(&self, total: i32) -> Result<Vec<i32>, ConfigError> {
        parse_partitions(&self.owned_partitions, total).map_err(|reason| ConfigError::Invalid {
            option: "owned-partitions".into(),
            reason,
        })
    }

    /// Peers from `--peers`.
    pub fn peer_list(&self, total: i32) -> Result<Vec<Peer>, ConfigError> {
        parse_peers(&self.peers, total).map_err(|reason| ConfigError::Invalid {
            option: "peers".into(),
            reason,
        })
    }

    /// Whether the balancer assigns partitions.
    pub fn dynamic(&self) -> bool {
        self.ownership == Ownership::Dynamic
    }

    /// One LLM attempt's time limit.
    pub fn llm_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.llm_timeout_secs)
    }
}

/// What no single option's parser can check: ids, and partition lists against the count.
fn check_values(c: &Config) -> Result<(), ConfigError> {
    if crate::validate::check_id("node-id", &c.node_id).is_err() {
        return Err(ConfigError::Invalid {
            option: "node-id".into(),
            reason: "must match [A-Za-z0-9._:-]{1,128}".into(),
        });
    }
    c.owned(c.partitions)?;
    c.peer_list(c.partitions)?;
    if let Some(m) = c.min_insync_replicas
        && m > c.replication_factor
    {
        return Err(ConfigError::Invalid {
            option: "min-insync-replicas".into(),
            reason: format!(
                "{m} is more than --replication-factor {}: no write could ever be acknowledged",
                c.replication_factor
            ),
        });
    }
    if let Some(url) = &c.otlp_endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError::Invalid {
            option: "otlp-endpoint".into(),
            reason: format!(
                "{url:?} is not an http:// or https:// URL (the collector's OTLP/HTTP port, e.g. http://otel-collector:4318)"
            ),
        });
    }
    if c.auth == AuthMode::Required {
        let jwks = c.jwks_file.is_some() || c.jwks_url.is_some();
        if c.api_keys_file.is_none() && !jwks {
            return Err(ConfigError::Invalid {
                option: "auth".into(),
                reason: "no credentials are configured: give --api-keys-file and/or --jwks-file or \
                         --jwks-url (or --auth none, for development only)"
                    .into(),
            });
        }
        for (option, value) in [("jwt-issuer", &c.jwt_issuer), ("jwt-audience", &c.jwt_audience)] {
            if jwks && value.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid {
                    option: option.into(),
                    reason: "is required with --jwks-file or --jwks-url".into(),
                });
            }
        }
    }
    Ok(())
}

/// Parses `all` or `0-7,12` into sorted partitions below `total`.
pub fn parse_partitions(spec: &str, total: i32) -> Result<Vec<i32>, String> {
    let spec = spec.trim();
    if spec == "all" {
        return Ok((0..total).collect());
    }
    if spec.is_empty() || spec == "none" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: i32 = lo
            .parse()
            .map_err(|_| format!("{part:?} is not a partition or range"))?;
        let hi: i32 = hi
            .parse()
            .map_err(|_| format!("{part:?} is not a partition or range"))?;
        if lo < 0 || hi < lo || hi >= total {
            return Err(format!("{part:?} is outside 0..{}", total - 1));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses `node=url|parts;node=url|parts`.
pub fn parse_peers(spec: &str, total: i32) -> Result<Vec<Peer>, String> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (node, rest) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected node=url|partitions"))?;
            let (url, parts) = rest.split_once('|').unwrap_or((rest, "none"));
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!("{item:?}: url must start with http:// or https://"));
            }
            Ok(Peer {
                node_id: node.trim().to_string(),
                url: url.trim().trim_end_matches('/').to_string(),
                partitions: parse_partitions(parts, total)?,
            })
        })
        .collect()
}

/// Reads a flat YAML mapping of scalars with serde-saphyr.
mod serde_saphyr_value {
    use std::collections::BTreeMap;

    /// A scalar value rendered as the text a flag would take.
    #[derive(Debug)]
    pub struct Scalar(pub String);

    impl<'de> serde::Deserialize<'de> for Scalar {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            enum Any {
                B(bool),
                I(i64),
                F(f64),
                S(String),
            }
            Ok(Scalar(match Any::deserialize(d)? {
                Any::B(b) => b.to_string(),
                Any::I(i) => i.to_string(),
                Any::F(f) => f.to_string(),
                Any::S(s) => s,
            }))
        }
    }

    pub fn parse(text: &str) -> Result<BTreeMap<String, Scalar>, String> {
        if text.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}

mod settings;

#[cfg(test)]
mod tests;
