//! Workers on a Kafka that authenticates its clients as a Strimzi cluster does: SCRAM-SHA-512
//! over TLS, and mutual TLS with a client certificate. The ChatAgents are docs/kubernetes.md's
//! walk-through beside Strimzi, the client settings those the operator renders for them; only
//! the paths differ (the pod's mounted files are local files here). Real broker listeners
//! (scripts/kafka.sh, KAFKA_SECURE=1), real handshakes, a chat reply through each.

use std::time::Duration;

use meshchat_tests::*;

const T: Duration = Duration::from_secs(60);

/// The walk-through's two ChatAgents (SCRAM over TLS, mutual TLS), as docs/kubernetes.md shows them.
fn walkthrough() -> anyhow::Result<(String, String)> {
    let doc = std::fs::read_to_string("../docs/kubernetes.md")?;
    let section = doc
        .split("### Beside a Strimzi Kafka")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no Strimzi section"))?;
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let scram = blocks[0]
        .split("---\n")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no ChatAgent"))?
        .to_string();
    let head = scram.split("    sasl:\n").next().unwrap_or_default();
    let tail = scram.split("  auth:\n").nth(1).unwrap_or_default();
    let mtls = format!("{head}{}  auth:\n{tail}", blocks[1]);
    Ok((scram, mtls))
}

/// The operator's settings for `manifest`, with the pod's mounted files replaced by the broker's.
fn rendered(manifest: &str, broker: &PrivateBroker) -> anyhow::Result<String> {
    let agent = meshchat_operator::parse_manifest(manifest)?;
    let file = |n: &str| broker.tls_file(n).display().to_string();
    Ok(meshchat_operator::worker_kafka_properties(&agent)
        .into_iter()
        .map(|(k, v)| {
            let v = match v.as_str() {
                "/etc/meshchat/kafka-ca/ca.crt" => file("ca.crt"),
                "/etc/meshchat/kafka-client/tls.crt" => file("client.crt"),
                "/etc/meshchat/kafka-client/tls.key" => file("client.key"),
                _ => v,
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(","))
}

/// Each way in: its name, the walk-through's ChatAgent for it, the broker's listener.
fn modes(broker: &PrivateBroker) -> anyhow::Result<[(&'static str, String, String); 2]> {
    let (scram, mtls) = walkthrough()?;
    // the test broker's SCRAM user is `meshchat`
    let scram = scram.replace("username: support-user", "username: meshchat");
    Ok([("scram", scram, broker.sasl_ssl()), ("mtls", mtls, broker.mtls())])
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_chat_through_scram_over_tls_and_mutual_tls() -> anyhow::Result<()> {
    let _serial = serial().await;
    let broker = PrivateBroker::secure().await?;
    let llm = FakeLlm::start(&[]).await?;
    let modes = modes(&broker)?;
    for (mode, manifest, bootstrap) in &modes {
        let props = rendered(manifest, &broker)?;
        println!("{mode}: {props}");
        let prefix = unique_prefix(&format!("secured-{mode}"));
        let mut spec = WorkerSpec::new(&format!("{mode}-0"), &prefix, bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "2")
            .env("MESHCHAT_KAFKA_PROPERTIES", props.clone());
        if *mode == "scram" {
            assert!(props.contains("security.protocol=SASL_SSL"), "{props}");
            // as the pod gets them: the username from the spec, the password from the Secret
            spec = spec
                .env("MESHCHAT_KAFKA_SASL_USERNAME", "meshchat")
                .env("MESHCHAT_KAFKA_SASL_PASSWORD", broker.scram_password()?);
        } else {
            assert!(props.contains("security.protocol=SSL"), "{props}");
            assert!(props.contains("ssl.certificate.location="), "{props}");
        }
        let worker = Worker::start(spec).await?;
        let id = send(&worker.url, &format!("{mode}-conv"), "ann", "hello over TLS").await?;
        let reply = wait_reply(&worker.url, &format!("{mode}-conv"), &id, T).await?;
        assert!(reply["error"].is_null(), "{mode}: {reply}");
        println!("{mode}: a reply through the {bootstrap} listener");
    }
    // the same SCRAM settings with a wrong password: the broker refuses the worker
    let scram = &modes[0].1;
    let props = rendered(scram, &broker)?;
    let prefix = unique_prefix("secured-wrong");
    let spec = WorkerSpec::new("wrong-0", &prefix, &broker.sasl_ssl(), &llm.url)?
        .env("MESHCHAT_PARTITIONS", "2")
        .env("MESHCHAT_KAFKA_PROPERTIES", props)
        .env("MESHCHAT_KAFKA_SASL_USERNAME", "meshchat")
        .env("MESHCHAT_KAFKA_SASL_PASSWORD", "not-the-password");
    let refused = tokio::time::timeout(Duration::from_secs(30), Worker::start(spec)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a worker with a wrong SCRAM password must not become ready"
    );
    let log = std::env::temp_dir()
        .join("meshchat-tests")
        .join(prefix.trim_end_matches('.'))
        .join("wrong-0.log");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    // which Kafka it cannot use, and why: librdkafka's words for the refused login
    assert!(
        log.contains("Kafka not ready")
            && log.contains(&broker.sasl_ssl())
            && log.contains("SASL authentication error"),
        "the worker's log says which Kafka it cannot use, and why: {}",
        log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// The balancer's own connection, as the operator makes it: the walk-through's ChatAgents, their
/// Secrets' values (the broker's password, CA and client certificate) read the way the operator
/// reads them and handed to librdkafka as PEM, here from a directory laid out as Kubernetes mounts
/// a Secret (`meshchat-operator local --secrets-dir`). A dynamic worker on the same listener
/// answers only once that balancer has assigned it partitions.
#[tokio::test(flavor = "multi_thread")]
async fn the_balancer_connects_with_the_secrets_over_scram_and_mutual_tls() -> anyhow::Result<()> {
    let _serial = serial().await;
    let broker = PrivateBroker::secure().await?;
    let llm = FakeLlm::start(&[]).await?;
    for (mode, manifest, bootstrap) in modes(&broker)? {
        let prefix = unique_prefix(&format!("secured-balancer-{mode}"));
        let manifest = manifest.replace("topicPrefix: \"support.\"", &format!("topicPrefix: \"{prefix}\""));
        let agent = meshchat_operator::parse_manifest(&manifest)?;
        assert_eq!(agent.spec.kafka.topic_prefix, prefix);
        let dir = std::env::temp_dir()
            .join("meshchat-tests")
            .join(prefix.trim_end_matches('.'));
        let secrets = dir.join("secrets");
        let put = |secret: &str, key: &str, value: &str| -> anyhow::Result<()> {
            std::fs::create_dir_all(secrets.join(secret))?;
            Ok(std::fs::write(secrets.join(secret).join(key), value)?)
        };
        let kafka = &agent.spec.kafka;
        if let Some(sasl) = &kafka.sasl {
            let c = &sasl.credentials_secret_ref;
            put(&c.name, &c.password_key, &broker.scram_password()?)?;
        }
        let tls = kafka
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{mode}: no tls"))?;
        if let Some(ca) = &tls.ca_secret_ref {
            put(
                &ca.name,
                &ca.key,
                &std::fs::read_to_string(broker.tls_file("ca.crt"))?,
            )?;
        }
        if let Some(cert) = &tls.client_cert_secret_ref {
            put(
                &cert.name,
                &cert.cert_key,
                &std::fs::read_to_string(broker.tls_file("client.crt"))?,
            )?;
            put(
                &cert.name,
                &cert.key_key,
                &std::fs::read_to_string(broker.tls_file("client.key"))?,
            )?;
        }
        let file = dir.join("chatagent.yaml");
        std::fs::write(&file, &manifest)?;
        let log = std::fs::File::create(dir.join("balancer.log"))?;
        let _balancer = tokio::process::Command::new(bin("meshchat-operator"))
            .args(["local", "-f"])
            .arg(&file)
            .arg("--bootstrap")
            .arg(&bootstrap)
            .arg("--secrets-dir")
            .arg(&secrets)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut spec = WorkerSpec::new(&format!("{mode}-dynamic-0"), &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "2")
            .env("MESHCHAT_OWNERSHIP", "dynamic")
            .env("MESHCHAT_AGENT", "support")
            .env("MESHCHAT_KAFKA_PROPERTIES", rendered(&manifest, &broker)?);
        if mode == "scram" {
            spec = spec
                .env("MESHCHAT_KAFKA_SASL_USERNAME", "meshchat")
                .env("MESHCHAT_KAFKA_SASL_PASSWORD", broker.scram_password()?);
        }
        let worker = Worker::start(spec).await?;
        let conv = format!("{mode}-balanced");
        let id = send(&worker.url, &conv, "ann", "hello, balanced over TLS").await?;
        let reply = wait_reply(&worker.url, &conv, &id, T).await.map_err(|e| {
            let said = std::fs::read_to_string(dir.join("balancer.log")).unwrap_or_default();
            anyhow::anyhow!("{mode}: no reply ({e}); the balancer said:\n{said}")
        })?;
        assert!(reply["error"].is_null(), "{mode}: {reply}");
        println!("{mode}: the balancer assigned the partitions over {bootstrap}");
    }
    Ok(())
}

#[tokio::test]
async fn a_local_balancer_without_the_secrets_says_where_to_put_them() -> anyhow::Result<()> {
    let (scram, _) = walkthrough()?;
    let dir = std::env::temp_dir()
        .join("meshchat-tests")
        .join("secured-no-secrets");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("chatagent.yaml");
    std::fs::write(&file, &scram)?;
    let out = std::process::Command::new(bin("meshchat-operator"))
        .args(["local", "-f"])
        .arg(&file)
        .output()?;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--secrets-dir") && said.contains("support-user/password"),
        "{said}"
    );
    Ok(())
}
