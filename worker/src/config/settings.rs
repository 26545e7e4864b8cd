//! What each component takes from the configuration: the one place that maps options to the
//! settings structs the components are built with.

use std::time::Duration;

use meshchat_wire::kafka::TailFetch;

use super::{AuthMode, Config};
use crate::auth::{AuthSettings, ClaimNames, JwtSettings};
use crate::http::HttpSettings;
use crate::limits::LimitSettings;
use crate::llm::LlmSettings;
use crate::log::LogSettings;
use crate::owner::{AnswerSettings, OwnerSettings};
use crate::ownership::Timeouts;
use crate::store::Keep;

// === impl Config ===

impl Config {
    /// How to reach Kafka and lay out the topics.
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            bootstrap: self.kafka_bootstrap.clone(),
            properties: self.kafka_properties.0.clone(),
            sasl: self
                .kafka_sasl_username
                .clone()
                .zip(self.kafka_sasl_password.clone()),
            topic_prefix: self.topic_prefix.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
        }
    }

    /// How the owner works.
    pub fn owner_settings(&self) -> OwnerSettings {
        OwnerSettings {
            node_id: self.node_id.clone(),
            system_prompt: self.system_prompt.clone(),
            context_tokens: self.context_tokens,
            snapshot_interval: Duration::from_secs_f64(self.snapshot_interval_secs),
            snapshot_max_bytes: self.snapshot_max_bytes as usize,
            idle_evict: Duration::from_secs_f64(self.idle_evict_secs),
            max_resident: self.max_resident_conversations,
            max_queued_answers: self.max_queued_answers,
            fetch: self.fetch(),
            shutdown_grace: Duration::from_secs_f64(self.shutdown_grace_secs),
        }
    }

    /// What callers and tenants may take from this worker.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            user_messages_per_minute: self.user_messages_per_minute,
            user_message_burst: self.user_message_burst,
            tenant_messages_per_minute: self.tenant_messages_per_minute,
            tenant_message_burst: self.tenant_message_burst,
            user_reads_per_minute: self.user_reads_per_minute,
            user_streams: self.user_streams,
            tenant_streams: self.tenant_streams,
            worker_streams: self.worker_streams,
            tenant_llm_tokens_per_minute: self.tenant_llm_tokens_per_minute,
            quota_wait: Duration::from_secs_f64(self.quota_wait_secs),
            max_requests: self.max_requests,
            max_backlog: self.max_backlog,
            ws_max_message_bytes: self.ws_max_message_bytes,
            ws_ping: Duration::from_secs_f64(self.ws_ping_secs),
        }
    }

    /// History kept per conversation, in memory and in snapshots.
    pub fn keep(&self) -> Keep {
        Keep {
            entries: self.history_limit,
            bytes: self.snapshot_max_bytes as usize,
            pending: self.max_pending_per_conversation as usize,
            participants: self.max_participants_per_conversation as usize,
            interrupt: self.while_replying == meshchat_wire::worker::WhileReplying::Interrupt,
        }
    }

    /// Who answers.
    pub fn answer_settings(&self) -> AnswerSettings {
        AnswerSettings {
            node_id: self.node_id.clone(),
            agent_name: self.agent_name.clone(),
        }
    }

    /// The LLM client.
    pub fn llm_settings(&self) -> LlmSettings {
        LlmSettings {
            base_url: self.llm_base_url.clone(),
            api_key: self.api_key(),
            model: self.llm_model.clone(),
            temperature: self.llm_temperature,
            max_tokens: self.llm_max_tokens,
            timeout: self.llm_timeout(),
            retries: self.llm_retries,
            backoff: Duration::from_millis(self.llm_backoff_ms),
            chunk_interval: Duration::from_millis(u64::from(self.chunk_interval_ms)),
        }
    }

    /// The partition machine's waits.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            handoff_grace: Duration::from_secs_f64(self.handoff_grace_secs),
            release_timeout: Duration::from_secs_f64(self.release_timeout_secs),
            retry: Duration::from_secs(1),
        }
    }

    /// The HTTP API's, once the log knows the partition count.
    pub fn http_settings(&self, partitions: i32) -> HttpSettings {
        HttpSettings {
            node_id: self.node_id.clone(),
            partitions,
            max_content_bytes: self.max_content_bytes,
            ownership: self.ownership,
            handoff_grace: Duration::from_secs_f64(self.handoff_grace_secs),
            mesh_secret: self.mesh_secret.clone(),
            model: self.agent.clone(),
        }
    }

    /// How callers are authenticated.
    pub fn auth_settings(&self) -> AuthSettings {
        let jwks = self.jwks_file.is_some() || self.jwks_url.is_some();
        AuthSettings {
            disabled: self.auth == AuthMode::None,
            api_keys_file: self.api_keys_file.clone(),
            jwt: jwks.then(|| JwtSettings {
                jwks_file: self.jwks_file.clone(),
                jwks_url: self.jwks_url.clone(),
                issuer: self.jwt_issuer.clone().unwrap_or_default(),
                audience: self.jwt_audience.clone().unwrap_or_default(),
                claims: ClaimNames {
                    tenant: self.jwt_tenant_claim.clone(),
                    user: self.jwt_user_claim.clone(),
                    role: self.jwt_role_claim.clone(),
                },
                leeway: Duration::from_secs(self.jwt_leeway_secs),
            }),
        }
    }

    /// How tail consumers fetch.
    pub fn fetch(&self) -> TailFetch {
        TailFetch::from_batch_ms(self.fetch_batch_ms)
    }

    /// Time between heartbeats.
    pub fn heartbeat_every(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}
