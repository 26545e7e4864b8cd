//! MeshChat operator: reconciles `ChatAgent` resources (children, status, /scale, autoscaling)
//! and balances conversation partitions across workers. `meshchat-operator run` runs it on
//! Kubernetes with leader election; `meshchat-operator local -f` runs one balancer without it.
#![forbid(unsafe_code)]

mod autoscale;
mod balancer;
mod children;
mod controller;
mod kafka_client;
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

use meshchat_crds::ChatAgent;

/// A ChatAgent manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML, or not a ChatAgent.
    #[error("not a valid ChatAgent manifest: {0}")]
    Parse(String),
    /// Fields the API server would refuse, each named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<meshchat_crds::Violation>),
}

/// Parses a ChatAgent manifest (what a user would `kubectl apply`) and checks it as the API
/// server would, against the generated CRD: its defaults, its schema (unknown fields refused)
/// and its CEL rules (`meshchat_crds::validate`). So local runs refuse what a cluster would.
pub fn parse_manifest(yaml: &str) -> Result<ChatAgent, ManifestError> {
    let mut object: serde_json::Value =
        serde_saphyr::from_str(yaml).map_err(|e| ManifestError::Parse(e.to_string()))?;
    let found = meshchat_crds::validate(&mut object).map_err(|e| ManifestError::Parse(e.to_string()))?;
    if !found.is_empty() {
        return Err(ManifestError::Invalid(found));
    }
    serde_json::from_value(object).map_err(|e| ManifestError::Parse(e.to_string()))
}

/// The librdkafka settings the operator renders into a ChatAgent's worker configuration for its
/// SASL and TLS choices (file paths as mounted in the worker pods).
pub fn worker_kafka_properties(agent: &ChatAgent) -> Vec<(String, String)> {
    children::kafka_properties(agent, true)
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

    /// docs/kubernetes.md's walk-through beside Strimzi: both of its ChatAgents are valid and
    /// become the client settings it describes.
    #[test]
    fn the_strimzi_walkthrough_manifests_are_valid() {
        let doc = include_str!("../../docs/kubernetes.md");
        let section = doc
            .split("### Beside a Strimzi Kafka")
            .nth(1)
            .expect("the section");
        let blocks: Vec<&str> = section
            .split("```yaml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        let scram = blocks[0].split("---\n").nth(1).expect("the ChatAgent");
        let agent = parse_manifest(scram).expect("valid");
        let props = children::kafka_properties(&agent, true);
        assert!(
            props.contains(&("security.protocol".into(), "SASL_SSL".into())),
            "{props:?}"
        );
        assert_eq!(
            agent.spec.kafka.sasl.map(|s| s.credentials_secret_ref.username),
            Some(Some("support-user".into()))
        );
        // the mutual-TLS form: its tls block in place of sasl and tls
        let head = scram.split("    sasl:\n").next().expect("head");
        let tail = scram.split("  auth:\n").nth(1).expect("tail");
        let mtls = format!("{head}{}  auth:\n{tail}", blocks[1]);
        let agent = parse_manifest(&mtls).expect("valid");
        let props = children::kafka_properties(&agent, true);
        assert!(
            props.contains(&("security.protocol".into(), "SSL".into())),
            "{props:?}"
        );
        assert!(
            props.iter().any(|(k, _)| k == "ssl.certificate.location"),
            "{props:?}"
        );
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let bad = SAMPLE.replace("lowWatermark: 0.2", "lowWatermark: 0.9");
        let err = parse_manifest(&bad).expect_err("watermark order");
        assert_eq!(
            err.to_string(),
            "spec.rebalance: lowWatermark must be below highWatermark"
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
        // a misspelt field, and another kind, as the API server's strict validation says
        let err = parse_manifest(&SAMPLE.replace("  replicas:", "  replica:")).expect_err("unknown field");
        assert!(
            err.to_string().starts_with("spec: ") && err.to_string().contains("replica"),
            "{err}"
        );
        let err = parse_manifest(&SAMPLE.replace("kind: ChatAgent", "kind: Deployment")).expect_err("kind");
        assert!(err.to_string().starts_with("kind: "), "{err}");
        // every violation is named, not only the first
        let two = SAMPLE
            .replace("replicas: 3", "replicas: -1")
            .replace("lowWatermark: 0.2", "lowWatermark: 7");
        let err = parse_manifest(&two).expect_err("two");
        assert!(
            err.to_string().contains("spec.replicas")
                && err.to_string().contains("spec.rebalance.lowWatermark"),
            "{err}"
        );
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
        assert!(
            err.to_string().starts_with("spec: spec.auth is required"),
            "{err}"
        );
        let empty = SAMPLE.replace(AUTH, "  auth: {mode: Required}\n");
        let err = parse_manifest(&empty).expect_err("no credentials");
        assert!(err.to_string().contains("apiKeysSecretRef"), "{err}");
        let open = SAMPLE.replace(AUTH, "  auth: {mode: None}\n");
        assert!(parse_manifest(&open).is_ok(), "development only, but explicit");
    }
}
