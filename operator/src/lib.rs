//! MeshChat operator: reconciles `ChatAgent` resources (children, status, /scale, autoscaling)
//! and balances conversation partitions across workers. `meshchat-operator run` runs it on
//! Kubernetes with leader election; `meshchat-operator local -f` runs one balancer without it.
#![forbid(unsafe_code)]

mod autoscale;
mod balancer;
mod children;
mod controller;
mod leader;
pub mod metrics;
pub mod planner;
mod serve;
mod status;
mod supervisor;

pub use balancer::{LocalOptions, balance_locally, shutdown_signal};
pub use children::Settings as ChildSettings;
pub use leader::ElectionTiming;
pub use serve::{Options, operate};

use meshchat_crds::{AuthMode, ChatAgent};

/// A ChatAgent manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML, or not a ChatAgent.
    #[error("not a valid ChatAgent manifest: {0}")]
    Parse(String),
    /// A field holds a value the mesh cannot run with.
    #[error("spec.{field}: {message}")]
    Invalid {
        /// Path under `spec`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Parses a ChatAgent manifest (what a user would `kubectl apply`) and checks the rules the
/// API server's schema also enforces, so local runs refuse what a cluster would refuse.
pub fn parse_manifest(yaml: &str) -> Result<ChatAgent, ManifestError> {
    let agent: ChatAgent = serde_saphyr::from_str(yaml).map_err(|e| ManifestError::Parse(e.to_string()))?;
    let spec = &agent.spec;
    let invalid = |field, message: String| Err(ManifestError::Invalid { field, message });
    if spec.replicas < 0 {
        return invalid("replicas", format!("must not be negative, got {}", spec.replicas));
    }
    if !(1..=4096).contains(&spec.kafka.partitions) {
        return invalid(
            "kafka.partitions",
            format!("must be 1..4096, got {}", spec.kafka.partitions),
        );
    }
    let r = &spec.rebalance;
    if !(0.0..=1.0).contains(&r.low_watermark) || !(0.0..=1.0).contains(&r.high_watermark) {
        return invalid("rebalance", "watermarks must be between 0 and 1".into());
    }
    if r.low_watermark >= r.high_watermark {
        return invalid(
            "rebalance.lowWatermark",
            format!(
                "must be below highWatermark ({} >= {})",
                r.low_watermark, r.high_watermark
            ),
        );
    }
    if let Some(e) = spec
        .env
        .iter()
        .flatten()
        .find(|e| e.name.starts_with("MESHCHAT_"))
    {
        return invalid(
            "env",
            format!(
                "must not set MESHCHAT_* variables ({}): the operator sets them from the ChatAgent's fields",
                e.name
            ),
        );
    }
    if spec.kafka.sasl.is_some() && spec.kafka.tls.is_none() && !spec.kafka.allow_plaintext_sasl {
        return invalid(
            "kafka",
            "sasl without tls sends the credentials in clear: add tls, or set allowPlaintextSasl: true"
                .into(),
        );
    }
    match &spec.auth {
        None => {
            return invalid(
                "auth",
                "is required: who may call the workers — apiKeysSecretRef and/or jwt, or mode: None \
                 for development only"
                    .into(),
            );
        }
        Some(a) if a.mode == AuthMode::Required && a.api_keys_secret_ref.is_none() && a.jwt.is_none() => {
            return invalid(
                "auth",
                "auth needs apiKeysSecretRef and/or jwt (or mode: None, for development only)".into(),
            );
        }
        Some(_) => {}
    }
    if let Some(a) = &spec.autoscaling
        && a.min_replicas > a.max_replicas
    {
        return invalid(
            "autoscaling.minReplicas",
            format!(
                "must not exceed maxReplicas ({} > {})",
                a.min_replicas, a.max_replicas
            ),
        );
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../docs/examples/chatagent.yaml");
    const AUTH: &str = "  auth:\n    apiKeysSecretRef:\n      name: support-api-keys\n      key: keys.yaml\n";

    #[test]
    fn the_documented_sample_parses() {
        let agent = parse_manifest(SAMPLE).expect("sample is valid");
        assert_eq!(agent.spec.replicas, 3);
        assert_eq!(agent.spec.kafka.partitions, 24);
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let bad = SAMPLE.replace("lowWatermark: 0.2", "lowWatermark: 0.9");
        let err = parse_manifest(&bad).expect_err("watermark order");
        assert!(
            err.to_string().starts_with("spec.rebalance.lowWatermark"),
            "{err}"
        );
        let bad = SAMPLE.replace("replicas: 3", "replicas: -1");
        assert!(
            parse_manifest(&bad)
                .expect_err("negative")
                .to_string()
                .starts_with("spec.replicas")
        );
        assert!(matches!(
            parse_manifest("kind: [oops"),
            Err(ManifestError::Parse(_))
        ));
    }

    #[test]
    fn a_chat_agent_cannot_steer_the_workers_settings_or_send_credentials_in_clear() {
        let env = SAMPLE.replace(
            "spec:\n",
            "spec:\n  env:\n    - name: MESHCHAT_LLM_API_KEY\n      value: x\n",
        );
        let err = parse_manifest(&env).expect_err("MESHCHAT_* env");
        assert!(err.to_string().starts_with("spec.env"), "{err}");
        let ok = SAMPLE.replace(
            "spec:\n",
            "spec:\n  env:\n    - name: HTTPS_PROXY\n      value: http://proxy:3128\n",
        );
        assert!(parse_manifest(&ok).is_ok(), "other variables are the user's");
        let sasl = SAMPLE.replace(
            "  kafka:\n",
            "  kafka:\n    sasl:\n      mechanism: PLAIN\n      credentialsSecretRef: {name: kafka-creds}\n",
        );
        let err = parse_manifest(&sasl).expect_err("sasl without tls");
        assert!(err.to_string().contains("allowPlaintextSasl"), "{err}");
        let explicit = sasl.replace("  kafka:\n", "  kafka:\n    allowPlaintextSasl: true\n");
        assert!(parse_manifest(&explicit).is_ok());
    }

    #[test]
    fn a_chat_agent_says_who_may_call_its_workers() {
        let (with, without) = (SAMPLE, SAMPLE.replace(AUTH, ""));
        assert!(parse_manifest(with).is_ok());
        let err = parse_manifest(&without).expect_err("no auth");
        assert!(err.to_string().starts_with("spec.auth: is required"), "{err}");
        let empty = SAMPLE.replace(AUTH, "  auth: {mode: Required}\n");
        let err = parse_manifest(&empty).expect_err("no credentials");
        assert!(err.to_string().contains("apiKeysSecretRef"), "{err}");
        let open = SAMPLE.replace(AUTH, "  auth: {mode: None}\n");
        assert!(parse_manifest(&open).is_ok(), "development only, but explicit");
    }
}
