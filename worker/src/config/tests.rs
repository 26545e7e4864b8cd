use super::*;

/// Arguments after the program name; credentials are not what these tests are about, so
/// they run with `--auth none` (`auth_needs_credentials` is about them).
fn args(extra: &[&str]) -> Vec<String> {
    ["meshchat-worker", "--auth", "none"]
        .into_iter()
        .chain(extra.iter().copied())
        .map(String::from)
        .collect()
}

#[test]
fn partitions_spec() {
    assert_eq!(parse_partitions("all", 4), Ok(vec![0, 1, 2, 3]));
    assert_eq!(parse_partitions("3,0-1,1", 4), Ok(vec![0, 1, 3]));
    assert!(parse_partitions("2-9", 4).is_err());
    assert!(parse_partitions("x", 4).is_err());
}

#[test]
fn peers_spec() {
    let peers = parse_peers("n1=http://127.0.0.1:8081|0-1; n2=http://h:1/|2", 4).expect("valid");
    assert_eq!(peers[0].partitions, vec![0, 1]);
    assert_eq!(peers[1].url, "http://h:1");
    assert!(parse_peers("n1=ftp://x|1", 4).is_err());
}

#[test]
fn file_fills_unset_options_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("meshchat-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("worker.yaml");
    std::fs::write(
        &path,
        "llm-model: from-file\nllm-concurrency: 7\nagent-name: file-agent\n",
    )
    .expect("write");
    let p = path.to_string_lossy().to_string();
    let c = Config::load_from(args(&["--config", &p, "--agent-name", "flag-agent"])).expect("load");
    assert_eq!(c.llm_model, "from-file");
    assert_eq!(c.llm_concurrency, 7);
    assert_eq!(c.agent_name, "flag-agent");
    std::fs::write(&path, "no-such-option: 1\n").expect("write");
    let err = Config::load_from(args(&["--config", &p])).expect_err("unknown key");
    assert!(err.to_string().contains("no-such-option"), "{err}");
}

#[test]
fn auth_needs_credentials_unless_explicitly_off() {
    let bare = |extra: &[&str]| {
        Config::load_from(
            std::iter::once("meshchat-worker")
                .chain(extra.iter().copied())
                .map(String::from)
                .collect(),
        )
    };
    let err = bare(&[]).expect_err("no credentials");
    assert!(err.to_string().starts_with("--auth: no credentials"), "{err}");
    let c = bare(&["--api-keys-file", "/etc/keys.yaml"]).expect("keys");
    assert!(!c.auth_settings().disabled);
    let err = bare(&["--jwks-file", "/etc/jwks.json", "--jwt-audience", "a"]).expect_err("no issuer");
    assert!(err.to_string().starts_with("--jwt-issuer"), "{err}");
    let c = bare(&[
        "--jwks-url",
        "https://idp/jwks",
        "--jwt-issuer",
        "i",
        "--jwt-audience",
        "a",
    ])
    .expect("jwt");
    let jwt = c.auth_settings().jwt.expect("jwt settings");
    assert_eq!((jwt.issuer.as_str(), jwt.leeway.as_secs()), ("i", 30));
    assert!(bare(&["--auth", "none"]).expect("off").auth_settings().disabled);
    let err = bare(&["--auth", "off"]).expect_err("bad mode");
    assert!(err.to_string().starts_with("--auth"), "{err}");
}

#[test]
fn bad_values_name_the_option() {
    let err = Config::load_from(args(&["--owned-partitions", "0-99"])).expect_err("range");
    assert!(err.to_string().starts_with("--owned-partitions"), "{err}");
    let err = Config::load_from(args(&["--llm-concurrency", "0"])).expect_err("zero");
    assert!(err.to_string().starts_with("--llm-concurrency"), "{err}");
    let err = Config::load_from(args(&["--fetch-batch-ms", "5000"])).expect_err("too long");
    assert!(err.to_string().starts_with("--fetch-batch-ms"), "{err}");
    let ok = Config::load_from(args(&["--fetch-batch-ms", "5"])).expect("in range");
    assert_eq!(ok.fetch_batch_ms, 5);
    let err = Config::load_from(args(&["--chunk-interval-ms", "1001"])).expect_err("too long");
    assert!(err.to_string().starts_with("--chunk-interval-ms"), "{err}");
}

#[test]
fn enums_ranges_and_properties_are_checked_by_their_parsers() {
    let cases = [
        (&["--ownership", "sideways"][..], "--ownership", "static, dynamic"),
        (
            &["--tokenizer", "p50k_base"],
            "--tokenizer",
            "cl100k_base, o200k_base",
        ),
        (&["--log-format", "xml"], "--log-format", "text, json"),
        (
            &["--snapshot-interval-secs", "0"],
            "--snapshot-interval-secs",
            "positive",
        ),
        (
            &["--drain-timeout-secs=-1"],
            "--drain-timeout-secs",
            "non-negative",
        ),
        (&["--partitions", "0"], "--partitions", "1..=4096"),
        (
            &["--kafka-properties", "a=1,broken"],
            "--kafka-properties",
            "broken",
        ),
        (&["--node-id", "bad id"], "--node-id", "[A-Za-z0-9._:-]"),
    ];
    for (flags, option, says) in cases {
        let err = Config::load_from(args(flags)).expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with(option), "{flags:?}: {text}");
        assert!(text.contains(says), "{flags:?}: {text}");
    }
    let c = Config::load_from(args(&[
        "--ownership",
        "dynamic",
        "--tokenizer",
        "o200k_base",
        "--kafka-properties",
        "security.protocol=SSL",
    ]))
    .expect("valid");
    assert!(c.dynamic());
    assert_eq!(c.tokenizer, Encoding::O200kBase);
    assert_eq!(
        c.kafka_properties.0,
        vec![("security.protocol".into(), "SSL".into())]
    );
    // --help and unknown flags stay clap's (usage printed)
    assert!(matches!(
        Config::load_from(args(&["--no-such-flag"])),
        Err(ConfigError::Clap(_))
    ));
}

#[test]
fn the_file_the_operator_renders_is_read_key_by_key() {
    use meshchat_wire::worker::WorkerFile;
    // every field set, so a key the worker does not know, or reads differently, shows
    let file = WorkerFile {
        ownership: Ownership::Dynamic,
        agent: "team-a/support".into(),
        agent_name: "helper".into(),
        kafka_bootstrap: "kafka:9092".into(),
        topic_prefix: "support.".into(),
        partitions: 48,
        replication_factor: Some(3),
        min_insync_replicas: Some(2),
        kafka_properties: Some("security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512".into()),
        drain_timeout_secs: Some(30),
        shutdown_grace_secs: Some(7),
        llm_base_url: "http://vllm:8000/v1".into(),
        llm_model: "llama".into(),
        system_prompt: Some("Be brief:\nalways.".into()),
        llm_temperature: Some(0.25),
        llm_max_tokens: Some(300),
        context_tokens: Some(8000),
        llm_concurrency: Some(12),
        llm_timeout_secs: Some(45),
        while_replying: Some(meshchat_wire::worker::WhileReplying::Interrupt),
        auth: Some("required".into()),
        api_keys_file: Some("/etc/meshchat/auth/api-keys".into()),
        jwks_url: Some("https://idp.example/jwks.json".into()),
        jwt_issuer: Some("https://idp.example".into()),
        jwt_audience: Some("meshchat".into()),
        jwt_tenant_claim: Some("org".into()),
        jwt_user_claim: Some("email".into()),
        jwt_role_claim: Some("roles".into()),
        jwt_leeway_secs: Some(10),
        migrate_per_minute: Some(12),
        limits: meshchat_wire::worker::LimitsFile {
            user_messages_per_minute: Some(60),
            user_message_burst: Some(20),
            tenant_messages_per_minute: Some(600),
            tenant_message_burst: Some(200),
            user_reads_per_minute: Some(900),
            user_streams: Some(8),
            tenant_streams: Some(80),
            worker_streams: Some(800),
            tenant_llm_tokens_per_minute: Some(50_000),
            quota_wait_secs: Some(3),
            max_pending_per_conversation: Some(9),
            max_participants_per_conversation: Some(99),
            max_requests: Some(77),
            max_backlog: Some(7000),
        },
    };
    let dir = std::env::temp_dir().join(format!("meshchat-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join(worker::CONFIG_FILE);
    std::fs::write(&path, serde_saphyr::to_string(&file).expect("yaml")).expect("write");
    let p = path.to_string_lossy().to_string();
    // no --auth none here: the file's auth options are part of what is checked
    let bare = vec!["meshchat-worker".to_string(), "--config".into(), p.clone()];
    let c = Config::load_from(bare).expect("the worker reads what the operator renders");
    assert_eq!(c.ownership, file.ownership);
    assert_eq!(c.agent, file.agent);
    assert_eq!(c.agent_name, file.agent_name);
    assert_eq!(c.kafka_bootstrap, file.kafka_bootstrap);
    assert_eq!(c.topic_prefix, file.topic_prefix);
    assert_eq!(c.partitions, file.partitions);
    assert_eq!(Some(c.replication_factor), file.replication_factor);
    assert_eq!(c.min_insync_replicas, file.min_insync_replicas);
    assert_eq!(
        c.kafka_properties.to_string(),
        file.kafka_properties.clone().unwrap_or_default()
    );
    assert_eq!(Some(c.drain_timeout_secs), file.drain_timeout_secs.map(f64::from));
    assert_eq!(
        Some(c.shutdown_grace_secs),
        file.shutdown_grace_secs.map(f64::from)
    );
    assert_eq!(c.llm_base_url, file.llm_base_url);
    assert_eq!(c.llm_model, file.llm_model);
    assert_eq!(Some(c.system_prompt), file.system_prompt);
    assert_eq!(c.llm_temperature.map(f64::from), file.llm_temperature);
    assert_eq!(Some(c.llm_max_tokens), file.llm_max_tokens);
    assert_eq!(Some(c.context_tokens), file.context_tokens);
    assert_eq!(Some(c.llm_concurrency), file.llm_concurrency);
    assert_eq!(Some(c.llm_timeout_secs), file.llm_timeout_secs.map(f64::from));
    assert_eq!(Some(c.while_replying), file.while_replying);
    assert_eq!(c.auth, AuthMode::Required);
    assert_eq!(
        c.api_keys_file.map(|f| f.to_string_lossy().to_string()),
        file.api_keys_file
    );
    assert_eq!(c.jwks_url, file.jwks_url);
    assert_eq!(c.jwt_issuer, file.jwt_issuer);
    assert_eq!(c.jwt_audience, file.jwt_audience);
    assert_eq!(Some(c.jwt_tenant_claim), file.jwt_tenant_claim);
    assert_eq!(Some(c.jwt_user_claim), file.jwt_user_claim);
    assert_eq!(Some(c.jwt_role_claim), file.jwt_role_claim);
    assert_eq!(Some(c.jwt_leeway_secs), file.jwt_leeway_secs.map(u64::from));
    assert_eq!(Some(c.migrate_per_minute), file.migrate_per_minute);
    let l = &file.limits;
    assert_eq!(Some(c.user_messages_per_minute), l.user_messages_per_minute);
    assert_eq!(Some(c.user_message_burst), l.user_message_burst);
    assert_eq!(Some(c.tenant_messages_per_minute), l.tenant_messages_per_minute);
    assert_eq!(Some(c.tenant_message_burst), l.tenant_message_burst);
    assert_eq!(Some(c.user_reads_per_minute), l.user_reads_per_minute);
    assert_eq!(Some(c.user_streams), l.user_streams);
    assert_eq!(Some(c.tenant_streams), l.tenant_streams);
    assert_eq!(Some(c.worker_streams), l.worker_streams);
    assert_eq!(
        Some(c.tenant_llm_tokens_per_minute),
        l.tenant_llm_tokens_per_minute
    );
    assert_eq!(Some(c.quota_wait_secs), l.quota_wait_secs.map(f64::from));
    assert_eq!(
        Some(c.max_pending_per_conversation),
        l.max_pending_per_conversation
    );
    assert_eq!(
        Some(c.max_participants_per_conversation),
        l.max_participants_per_conversation
    );
    assert_eq!(Some(c.max_requests), l.max_requests.map(|n| n as usize));
    assert_eq!(Some(c.max_backlog), l.max_backlog.map(i64::from));
    // the defaults the operator leaves out are the contract's
    let c = Config::load_from(args(&[])).expect("defaults");
    assert_eq!(c.listen.port(), worker::HTTP_PORT);
    assert_eq!(c.drain_timeout_secs, f64::from(worker::DRAIN_TIMEOUT_SECS));
    assert_eq!(c.shutdown_grace_secs, f64::from(worker::SHUTDOWN_GRACE_SECS));
}

#[test]
fn min_insync_replicas_above_the_replication_factor_is_refused() {
    let args = |extra: &[&str]| {
        let mut a = vec!["meshchat-worker", "--auth", "none"];
        a.extend(extra);
        Config::load_from(a.into_iter().map(String::from).collect::<Vec<_>>())
    };
    let err = args(&["--replication-factor", "1", "--min-insync-replicas", "2"])
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("min-insync-replicas") && err.contains("replication-factor 1"),
        "{err}"
    );
    let ok = args(&["--replication-factor", "3", "--min-insync-replicas", "2"]).expect("accepted");
    assert_eq!((ok.replication_factor, ok.min_insync_replicas), (3, Some(2)));
}
