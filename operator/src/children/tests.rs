use super::*;
use meshchat_crds::{
    AuthMode, AuthSpec, ChatAgentSpec, ClientCertSecretRef, CredentialsSecretRef, JwtSpec, SaslMechanism,
    SaslSpec, SecretKeyRef, TlsSpec,
};

fn agent(spec: ChatAgentSpec) -> ChatAgent {
    let mut a = ChatAgent::new("support", spec);
    a.metadata.namespace = Some("team-a".into());
    a.metadata.uid = Some("uid-1".into());
    a
}

fn sample() -> ChatAgent {
    let mut spec: ChatAgentSpec = serde_json::from_str("{}").expect("defaults");
    spec.replicas = 4;
    spec.kafka.bootstrap_servers = "kafka.team-a:9092".into();
    spec.kafka.topic_prefix = "support.".into();
    spec.llm.api_key_secret_ref = Some(SecretKeyRef {
        name: "llm-credentials".into(),
        key: "api-token-key".into(),
    });
    spec.llm.system_prompt = Some("You are helpful.\nBe brief: always.".into());
    spec.llm.while_replying = Some(meshchat_crds::WhileReplying::Interrupt);
    agent(spec)
}

#[test]
fn every_child_is_owned_labelled_and_named_after_the_agent() {
    let c = desired(&sample(), &Settings::default()).expect("children");
    let metas = [
        &c.stateful_set.metadata,
        &c.peers.metadata,
        &c.service.metadata,
        &c.config.metadata,
        &c.pdb.metadata,
        &c.service_account.metadata,
    ];
    for m in metas {
        assert_eq!(m.namespace.as_deref(), Some("team-a"));
        let owner = &m.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ChatAgent", "support", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        let labels = m.labels.as_ref().expect("labels");
        assert_eq!(labels["app.kubernetes.io/instance"], "support");
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
    }
    let names: Vec<_> = metas.iter().map(|m| m.name.clone().unwrap_or_default()).collect();
    assert_eq!(
        names,
        [
            "support",
            "support-peers",
            "support",
            "support-config",
            "support",
            "support-worker"
        ]
    );
}

#[test]
fn the_stateful_set_runs_workers_that_drain_before_stopping() {
    let c = desired(&sample(), &Settings::default()).expect("children");
    let spec = c.stateful_set.spec.expect("spec");
    assert_eq!(spec.replicas, Some(4));
    assert_eq!(spec.service_name.as_deref(), Some("support-peers"));
    assert_eq!(spec.selector.match_labels, Some(selector_labels("support")));
    let pod = spec.template.spec.expect("pod");
    assert_eq!(pod.termination_grace_period_seconds, Some(35));
    assert_eq!(pod.service_account_name.as_deref(), Some("support-worker"));
    let w = &pod.containers[0];
    assert_eq!(
        w.image.as_deref(),
        Some(Settings::default().default_image.as_str())
    );
    // probes go to the internal port; clients' Service reaches only the public one
    let get = |p: &Option<Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|g| (g.path.clone().unwrap_or_default(), g.port.clone()))
    };
    let internal = IntOrString::String("internal".into());
    assert_eq!(
        get(&w.readiness_probe),
        Some(("/readyz".into(), internal.clone()))
    );
    assert_eq!(get(&w.liveness_probe), Some(("/healthz".into(), internal)));
    let ports: Vec<_> = w
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("internal".to_string(), 9080)]
    );
    let service_ports = |s: &Service| -> Vec<i32> {
        s.spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| p.port)
            .collect()
    };
    assert_eq!(service_ports(&c.service), [8080]);
    assert_eq!(service_ports(&c.peers), [9080]);
    // the preStop hook drains from inside the pod (the only caller allowed without the secret)
    let pre_stop = w
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone());
    assert_eq!(
        pre_stop,
        Some(vec![
            "/usr/local/bin/meshchat-worker".to_string(),
            "drain".to_string()
        ])
    );
    let env: BTreeMap<_, _> = w.env.iter().flatten().map(|e| (e.name.as_str(), e)).collect();
    assert_eq!(env["MESHCHAT_NODE_ID"].value.as_deref(), Some("$(POD_NAME)"));
    assert_eq!(
        env["MESHCHAT_ADVERTISE_URL"].value.as_deref(),
        Some("http://$(POD_NAME).support-peers.team-a.svc:8080")
    );
    assert_eq!(
        env["MESHCHAT_INTERNAL_ADVERTISE_URL"].value.as_deref(),
        Some("http://$(POD_NAME).support-peers.team-a.svc:9080")
    );
    let mesh = env["MESHCHAT_MESH_SECRET"]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref());
    assert_eq!(
        mesh.map(|k| (k.name.as_str(), k.key.as_str())),
        Some(("support-mesh", "secret"))
    );
    let key = env["MESHCHAT_LLM_API_KEY"]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref());
    assert_eq!(
        key.map(|k| (k.name.as_str(), k.key.as_str())),
        Some(("llm-credentials", "api-token-key"))
    );
    // the secret never lands in the ConfigMap
    let rendered = &c.config.data.as_ref().expect("data")["worker.yaml"];
    assert!(!rendered.contains("llm-credentials") && !rendered.contains("api-token-key"));
}

#[test]
fn the_rendered_config_is_what_the_worker_reads() {
    let agent = sample();
    let text = render(&worker_file(&agent).expect("file")).expect("render");
    let map: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(&text).expect("yaml");
    assert_eq!(map["ownership"], "dynamic");
    assert_eq!(map["agent"], "team-a/support");
    assert_eq!(map["kafka-bootstrap"], "kafka.team-a:9092");
    assert_eq!(map["topic-prefix"], "support.");
    assert_eq!(map["partitions"], 24);
    assert_eq!(map["system-prompt"], "You are helpful.\nBe brief: always.");
    assert_eq!(map["while-replying"], "interrupt");
    // workers size their lease by the balancer's table, not by a second copy of the timeout
    assert!(!map.contains_key("heartbeat-timeout-secs"));
    // the text is the typed contract the worker's tests parse (meshchat_wire::worker::WorkerFile)
    let back: WorkerFile = serde_saphyr::from_str(&text).expect("a WorkerFile");
    assert_eq!(back, worker_file(&agent).expect("file"));
    assert_eq!(back.ownership, Ownership::Dynamic);
}

#[test]
fn a_config_change_rolls_the_pods_and_user_env_cannot_override_ours() {
    let a = sample();
    let mut b = sample();
    b.spec.llm.model = "gpt-4.1".into();
    let hash = |a: &ChatAgent| {
        desired(a, &Settings::default())
            .expect("children")
            .stateful_set
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .map(|a| a[CONFIG_HASH].clone())
    };
    assert_ne!(hash(&a), hash(&b));
    assert_eq!(hash(&a), hash(&sample()), "deterministic");
    b.spec.env = Some(vec![plain("MESHCHAT_LOG_FORMAT", "text"), plain("EXTRA", "1")]);
    let c = desired(&b, &Settings::default()).expect("children");
    let env = c
        .stateful_set
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let formats: Vec<_> = env.iter().filter(|e| e.name == "MESHCHAT_LOG_FORMAT").collect();
    assert_eq!(
        formats.len(),
        1,
        "one entry per name (server-side apply keys env by name)"
    );
    assert_eq!(
        formats[0].value.as_deref(),
        Some("json"),
        "the operator's, not the user's"
    );
    assert!(
        env.iter().any(|e| e.name == "EXTRA"),
        "the user's other variables stay"
    );
}

#[test]
fn auth_becomes_worker_options_and_a_mounted_keys_file() {
    let mut a = sample();
    a.spec.auth = Some(AuthSpec {
        mode: AuthMode::Required,
        api_keys_secret_ref: Some(SecretKeyRef {
            name: "support-keys".into(),
            key: "keys.yaml".into(),
        }),
        jwt: Some(JwtSpec {
            jwks_url: "https://idp/jwks.json".into(),
            issuer: "https://idp/".into(),
            audience: "meshchat".into(),
            tenant_claim: Some("org".into()),
            user_claim: None,
            role_claim: None,
            leeway_seconds: Some(10),
        }),
        migrate_per_minute: Some(3),
    });
    let text = render(&worker_file(&a).expect("file")).expect("render");
    for line in [
        "auth: required",
        "api-keys-file: /etc/meshchat/auth/api-keys",
        "jwks-url: https://idp/jwks.json",
        "jwt-issuer: https://idp/",
        "jwt-audience: meshchat",
        "jwt-tenant-claim: org",
        "jwt-leeway-secs: 10",
        "migrate-per-minute: 3",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(
        !text.contains("jwt-user-claim"),
        "unset claims keep the worker's defaults"
    );
    let c = desired(&a, &Settings::default()).expect("children");
    let pod = c.stateful_set.spec.expect("spec").template.spec.expect("pod");
    let keys = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "api-keys")
        .and_then(|v| v.secret)
        .expect("the keys Secret is a volume");
    assert_eq!(keys.secret_name.as_deref(), Some("support-keys"));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/meshchat/auth" && m.sub_path.is_none())
    );
    // no auth at all (an object the API server would refuse) renders a worker that refuses to
    // start without credentials, never an open one
    let text = render(&worker_file(&sample()).expect("file")).expect("render");
    assert!(
        text.contains("auth: required") && !text.contains("api-keys-file"),
        "{text}"
    );
    a.spec.auth = Some(AuthSpec {
        mode: AuthMode::None,
        ..AuthSpec::default()
    });
    assert!(
        render(&worker_file(&a).expect("file"))
            .expect("render")
            .contains("auth: none")
    );
}

#[test]
fn sasl_and_tls_become_client_settings_and_secret_references() {
    let mut a = sample();
    a.spec.kafka.sasl = Some(SaslSpec {
        mechanism: SaslMechanism::ScramSha512,
        credentials_secret_ref: CredentialsSecretRef {
            name: "kafka-user".into(),
            username: None,
            username_key: "user".into(),
            password_key: "pass".into(),
        },
    });
    a.spec.kafka.tls = Some(TlsSpec {
        ca_secret_ref: Some(SecretKeyRef {
            name: "kafka-ca".into(),
            key: "ca.pem".into(),
        }),
        client_cert_secret_ref: None,
    });
    let text = render(&worker_file(&a).expect("file")).expect("render");
    assert!(text.contains(
        "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,ssl.ca.location=/etc/meshchat/kafka-ca/ca.crt"
    ));
    let c = desired(&a, &Settings::default()).expect("children");
    let pod = c.stateful_set.spec.expect("spec").template.spec.expect("pod");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let pw = env
        .iter()
        .find(|e| e.name == "MESHCHAT_KAFKA_SASL_PASSWORD")
        .and_then(|e| e.value_from.clone());
    assert_eq!(
        pw.and_then(|v| v.secret_key_ref).map(|s| (s.name, s.key)),
        Some(("kafka-user".into(), "pass".into()))
    );
    let ca = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "kafka-ca")
        .and_then(|v| v.secret);
    assert_eq!(ca.and_then(|s| s.secret_name).as_deref(), Some("kafka-ca"));
    assert!(
        kafka_properties(&sample(), true).is_empty(),
        "plaintext needs no settings"
    );
}

#[test]
fn a_strimzi_user_s_name_and_a_client_certificate_reach_the_workers() {
    let mut a = sample();
    a.spec.kafka.sasl = Some(SaslSpec {
        mechanism: SaslMechanism::ScramSha512,
        credentials_secret_ref: CredentialsSecretRef {
            name: "support-user".into(),
            username: Some("support-user".into()),
            username_key: "username".into(),
            password_key: "password".into(),
        },
    });
    a.spec.kafka.tls = Some(TlsSpec {
        ca_secret_ref: None,
        client_cert_secret_ref: Some(ClientCertSecretRef {
            name: "support-tls".into(),
            cert_key: "user.crt".into(),
            key_key: "user.key".into(),
        }),
    });
    let text = render(&worker_file(&a).expect("file")).expect("render");
    assert!(
        text.contains(
            "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,\
             ssl.certificate.location=/etc/meshchat/kafka-client/tls.crt,\
             ssl.key.location=/etc/meshchat/kafka-client/tls.key"
        ),
        "{text}"
    );
    let c = desired(&a, &Settings::default()).expect("children");
    let pod = c.stateful_set.spec.expect("spec").template.spec.expect("pod");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let user = env
        .iter()
        .find(|e| e.name == "MESHCHAT_KAFKA_SASL_USERNAME")
        .expect("username");
    assert_eq!(
        user.value.as_deref(),
        Some("support-user"),
        "the literal, no Secret key read"
    );
    let pw = env
        .iter()
        .find(|e| e.name == "MESHCHAT_KAFKA_SASL_PASSWORD")
        .and_then(|e| e.value_from.clone())
        .and_then(|v| v.secret_key_ref)
        .map(|s| (s.name, s.key));
    assert_eq!(pw, Some(("support-user".into(), "password".into())));
    let cert = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "kafka-client")
        .and_then(|v| v.secret)
        .expect("client certificate volume");
    assert_eq!(cert.secret_name.as_deref(), Some("support-tls"));
    let items: Vec<(String, String)> = cert
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.key, i.path))
        .collect();
    assert_eq!(
        items,
        [
            ("user.crt".to_string(), "tls.crt".to_string()),
            ("user.key".to_string(), "tls.key".to_string())
        ]
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "kafka-client" && m.mount_path == "/etc/meshchat/kafka-client")
    );
}

#[test]
fn an_agent_not_from_the_api_server_is_refused() {
    let mut a = sample();
    a.metadata.uid = None;
    assert!(matches!(
        desired(&a, &Settings::default()),
        Err(ChildError::Missing("uid"))
    ));
    a.metadata.namespace = None;
    assert!(matches!(
        desired(&a, &Settings::default()),
        Err(ChildError::Missing("namespace"))
    ));
}

#[test]
fn worker_pods_meet_the_restricted_pod_security_standard() {
    let c = desired(&sample(), &Settings::default()).expect("children");
    let pod = c.stateful_set.spec.expect("spec").template.spec.expect("pod");
    let p = pod.security_context.expect("pod security context");
    assert_eq!(p.run_as_non_root, Some(true));
    assert!(p.run_as_user.is_some_and(|u| u != 0));
    assert_eq!(
        p.seccomp_profile.map(|s| s.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let w = pod.containers[0]
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(w.allow_privilege_escalation, Some(false));
    assert_eq!(w.read_only_root_filesystem, Some(true));
    assert_eq!(w.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
}

#[test]
fn limits_become_worker_options_and_unset_ones_keep_the_defaults() {
    let mut a = sample();
    a.spec.limits = Some(meshchat_crds::LimitsSpec {
        user_messages_per_minute: Some(30),
        tenant_llm_tokens_per_minute: Some(0),
        quota_wait_seconds: Some(2),
        ..Default::default()
    });
    let text = render(&worker_file(&a).expect("file")).expect("render");
    for line in [
        "user-messages-per-minute: 30",
        "tenant-llm-tokens-per-minute: 0",
        "quota-wait-secs: 2",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(!text.contains("user-message-burst"), "{text}");
    let text = render(&worker_file(&sample()).expect("file")).expect("render");
    assert!(!text.contains("per-minute: "), "no limits set: {text}");
}
