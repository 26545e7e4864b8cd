//! The operator against a real kube-apiserver (with etcd, kube-controller-manager,
//! kube-scheduler and kwok), driven with kubectl as a user would: install the CRD, apply a
//! ChatAgent, watch its children and status, scale it, have bad specs refused, edit it, lose
//! the leading operator, delete it. Real worker processes named after the StatefulSet's pods
//! run with the ConfigMap the operator rendered, so the operator's balancer assigns real
//! partitions and the status reports real load.

use std::time::Duration;

use meshchat_tests::image::{OciImage, archive};
use meshchat_tests::k8s::{ControlPlane, Operator};
use meshchat_tests::*;
use serde_json::Value;

// bounds for slow machines, not measurements
const SETTLE: Duration = Duration::from_secs(120);

fn sample(name: &str, bootstrap: &str, prefix: &str, replicas: i32) -> String {
    format!(
        "apiVersion: meshchat.io/v1alpha1
kind: ChatAgent
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  image: ghcr.io/meshchat/worker:test
  kafka:
    bootstrapServers: \"{bootstrap}\"
    topicPrefix: \"{prefix}\"
    partitions: 6
    # the test broker is a single node
    replicationFactor: 1
    minInsyncReplicas: 1
  llm:
    model: fake-model
    systemPrompt: You are a test.
  rebalance:
    intervalSeconds: 2
    heartbeatTimeoutSeconds: 3
    cooldownSeconds: 5
  auth:
    apiKeysSecretRef: {{name: {name}-api-keys, key: keys.yaml}}
"
    )
}

async fn agent(cp: &ControlPlane, name: &str) -> anyhow::Result<Value> {
    cp.get("chatagent", name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("chatagent {name} is gone"))
}

fn condition<'a>(agent: &'a Value, kind: &str) -> Option<&'a Value> {
    agent["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

async fn ready_pods(cp: &ControlPlane, name: &str) -> anyhow::Result<usize> {
    let pods: Value = serde_json::from_str(
        &cp.ok(&[
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/instance={name}"),
            "-o",
            "json",
        ])
        .await?,
    )?;
    Ok(pods["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| {
                    p["metadata"]["deletionTimestamp"].is_null()
                        && p["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .count()
        })
        .unwrap_or(0))
}

const SYSTEM: &str = "meshchat-system";
/// The Pod Security Admission level every pod of this test must meet.
const RESTRICTED: &str = "pod-security.kubernetes.io/enforce=restricted";

/// What ChatAgent `support` owns.
const CHILDREN: [(&str, &str); 7] = [
    ("statefulset", "support"),
    ("service", "support"),
    ("service", "support-peers"),
    ("configmap", "support-config"),
    ("poddisruptionbudget", "support"),
    ("serviceaccount", "support-worker"),
    ("secret", "support-mesh"),
];

async fn lease_holder(cp: &ControlPlane) -> Option<String> {
    let out = cp
        .ok(&["get", "lease", "meshchat-operator", "-n", SYSTEM, "-o", "json"])
        .await
        .ok()?;
    let lease: Value = serde_json::from_str(&out).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// `meshchat-operator validate -f`: whether it accepted the manifest, and what it printed.
fn validate_offline(dir: &std::path::Path, manifest: &str) -> anyhow::Result<(bool, String)> {
    let file = dir.join("validate.yaml");
    std::fs::write(&file, manifest)?;
    let out = std::process::Command::new(bin("meshchat-operator"))
        .args(["validate", "-f"])
        .arg(&file)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread")]
async fn chatagents_on_a_real_kube_apiserver() -> anyhow::Result<()> {
    let _serial = serial().await;
    let dir = std::env::temp_dir().join("meshchat-tests").join("k8s");
    let cp = ControlPlane::start(&dir).await?;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("k8s");
    let llm = FakeLlm::start(&["--token-latency-ms", "2"]).await?;

    // 1. the CRD installs; the chart renders and applies (RBAC, ServiceAccount, Deployment);
    //    two operator replicas run with the chart's ServiceAccount token (so exactly its RBAC)
    //    and elect a leader
    // and KEDA's (from its Go module), for the autoscaling examples
    let warnings = cp
        .install_crds(&[std::path::Path::new("../crds/chatagent.crd.yaml")])
        .await?;
    // the tests see what users of a current Kubernetes see
    let version: serde_json::Value = serde_json::from_str(&cp.ok(&["version", "-o", "json"]).await?)?;
    let minor: u32 = version["serverVersion"]["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .unwrap_or(0);
    assert!(
        minor >= 34,
        "the test control plane is Kubernetes 1.{minor}: {version}"
    );
    // what a current API server says of a CRD it accepts (unrecognized formats, say): nothing
    assert!(
        warnings.is_empty(),
        "the API server warns about the CRD: {warnings:?}"
    );
    cp.install_crds(&[&cp.bin.join("crds/keda")]).await?;
    cp.ok(&["create", "namespace", SYSTEM]).await?;
    // Pod Security Admission refuses any pod below `restricted` in both namespaces: the
    // operator's (the chart's Deployment) and the workers' (the ChatAgent's StatefulSet)
    for ns in [SYSTEM, "default"] {
        cp.ok(&["label", "namespace", ns, "--overwrite", RESTRICTED])
            .await?;
    }
    let chart = cp
        .helm_template_with(
            "meshchat",
            std::path::Path::new("../charts/meshchat"),
            SYSTEM,
            &["--set", "networkPolicy.namespaces={default}"],
        )
        .await?;
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&chart)).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = cp
        .ok(&["create", "token", "meshchat", "-n", SYSTEM, "--duration=2h"])
        .await?;
    let kubeconfig = cp.kubeconfig_with_token(&token, &dir.join("operator.kubeconfig"))?;
    // the workers' NetworkPolicy: clients on 8080, the mesh, the operator and the kubelet on 9080
    let np: Value = serde_json::from_str(
        &cp.ok(&["get", "networkpolicy", "meshchat-workers", "-o", "json"])
            .await?,
    )?;
    let ports: Vec<i64> = np["spec"]["ingress"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["ports"][0]["port"].as_i64())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ports, vec![8080, 9080], "{np}");
    assert!(
        np["spec"]["ingress"][0]["from"].is_null(),
        "anyone reaches the public port"
    );
    assert_eq!(
        np["spec"]["ingress"][1]["from"].as_array().map(Vec::len),
        Some(2),
        "{np}"
    );
    // a cluster-wide install reads no Secret anywhere; it only creates each mesh's
    let can = |kubeconfig: std::path::PathBuf, args: Vec<&'static str>| {
        let cp = &cp;
        async move {
            let k = kubeconfig.to_string_lossy().to_string();
            let mut full = vec!["--kubeconfig", k.as_str(), "auth", "can-i"];
            full.extend(args);
            let out = cp.kubectl(&full).await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
        }
    };
    assert!(!can(kubeconfig.clone(), vec!["get", "secrets", "-n", "default"]).await?);
    assert!(!can(kubeconfig.clone(), vec!["list", "secrets", "-A"]).await?);
    assert!(can(kubeconfig.clone(), vec!["create", "secrets", "-n", "default"]).await?);
    // it watches worker pods (failover when one goes) but cannot touch them
    assert!(can(kubeconfig.clone(), vec!["watch", "pods", "-n", "default"]).await?);
    assert!(!can(kubeconfig.clone(), vec!["delete", "pods", "-n", "default"]).await?);
    assert!(!can(kubeconfig.clone(), vec!["create", "pods/exec", "-n", "default"]).await?);
    // the chart's operator pods are admitted under `restricted` (kwok runs them: pods exist)
    wait_for(
        "the chart's operator pods, admitted under restricted",
        SETTLE,
        || async {
            let out = cp
                .ok(&["get", "deployment", "meshchat", "-n", SYSTEM, "-o", "json"])
                .await
                .ok()?;
            let d: Value = serde_json::from_str(&out).ok()?;
            (d["status"]["replicas"].as_i64() == d["spec"]["replicas"].as_i64()
                && d["status"]["replicas"].as_i64() > Some(0))
            .then_some(())
        },
    )
    .await?;
    // and the operator image's user and port are the chart's
    let op_image = OciImage::unpack(&archive("operator")?, &dir.join("operator-image"))?;
    let d: Value = serde_json::from_str(
        &cp.ok(&["get", "deployment", "meshchat", "-n", SYSTEM, "-o", "json"])
            .await?,
    )?;
    let op_pod = &d["spec"]["template"]["spec"];
    let op_uid: i64 = op_image.user().split(':').next().unwrap_or_default().parse()?;
    assert_eq!(op_pod["securityContext"]["runAsUser"], op_uid);
    assert!(op_pod["containers"][0]["command"].is_null());
    assert_eq!(
        op_image.ports(),
        [format!(
            "{}/tcp",
            op_pod["containers"][0]["ports"][0]["containerPort"]
        )]
    );
    let mut ops = [
        Operator::start(&kubeconfig, SYSTEM, "operator-a", &dir).await?,
        Operator::start(&kubeconfig, SYSTEM, "operator-b", &dir).await?,
    ];
    let leader = wait_for("an operator to lead", SETTLE, || lease_holder(&cp)).await?;
    println!("leader: {leader}");

    // 2. a sample ChatAgent applies; its children appear with the right specs; pods get Ready
    let name = "support";
    // a ChatAgent cannot steer the workers' settings or send Kafka credentials in clear
    let steer = sample("steer", &bootstrap, &prefix, 1).replace(
        "spec:\n",
        "spec:\n  env:\n    - name: MESHCHAT_LLM_API_KEY\n      valueFrom: {secretKeyRef: {name: other, key: k}}\n",
    );
    let plain_sasl = sample("plain", &bootstrap, &prefix, 1).replace(
        "  kafka:\n",
        "  kafka:\n    sasl:\n      mechanism: PLAIN\n      credentialsSecretRef: {name: creds}\n",
    );
    // and every mesh says who may call it: no auth at all, or a Required one without credentials
    let no_auth = sample("open", &bootstrap, &prefix, 1).replace(
        "  auth:\n    apiKeysSecretRef: {name: open-api-keys, key: keys.yaml}\n",
        "",
    );
    let empty_auth = sample("empty", &bootstrap, &prefix, 1).replace(
        "  auth:\n    apiKeysSecretRef: {name: empty-api-keys, key: keys.yaml}\n",
        "  auth:\n    mode: Required\n",
    );
    assert!(!no_auth.contains("auth:") && empty_auth.contains("mode: Required"));
    for (manifest, says) in [
        (steer, "MESHCHAT_"),
        (plain_sasl, "allowPlaintextSasl"),
        (no_auth, "spec.auth is required"),
        (empty_auth, "auth needs apiKeysSecretRef"),
    ] {
        let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest)).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "refused naming {says}: {err}"
        );
        // and offline, as docs/kubernetes.md says, with the same message
        let (ok, err) = validate_offline(&dir, &manifest)?;
        assert!(!ok && err.contains(says), "validate refused naming {says}: {err}");
    }
    let (ok, out) = validate_offline(&dir, &sample(name, &bootstrap, &prefix, 3))?;
    assert!(ok, "the sample is valid offline: {out}");
    let manifest = sample(name, &bootstrap, &prefix, 3);
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest)).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sts = wait_for("the StatefulSet", SETTLE, || async {
        cp.get("statefulset", name).await.ok()?
    })
    .await?;
    let uid = agent(&cp, name).await?["metadata"]["uid"].clone();
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "support-peers");
    let pod = &sts["spec"]["template"]["spec"];
    let worker = &pod["containers"][0];
    assert_eq!(worker["image"], "ghcr.io/meshchat/worker:test");
    assert_eq!(worker["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(worker["readinessProbe"]["httpGet"]["port"], "internal");
    assert_eq!(
        worker["lifecycle"]["preStop"]["exec"]["command"],
        serde_json::json!(["/usr/local/bin/meshchat-worker", "drain"])
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], 35);
    // the pod runs the worker image as `make images` built it: its numeric user, its entrypoint
    // (no command override; the preStop hook execs that binary), the ports it exposes
    let image = OciImage::unpack(&archive("worker")?, &dir.join("worker-image"))?;
    let image_uid: i64 = image.user().split(':').next().unwrap_or_default().parse()?;
    assert_eq!(pod["securityContext"]["runAsUser"], image_uid);
    assert!(worker["command"].is_null(), "the image's entrypoint runs");
    assert_eq!(
        worker["lifecycle"]["preStop"]["exec"]["command"][0].as_str(),
        image.entrypoint().first().map(String::as_str)
    );
    let mut ports: Vec<String> = worker["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/tcp", p["containerPort"]))
        .collect();
    ports.sort();
    let mut exposed = image.ports();
    exposed.sort();
    assert_eq!(ports, exposed);
    // the API keys Secret is mounted (a volume the kubelet updates, so keys rotate in place)
    let keys = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "api-keys"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys["secret"]["secretName"], "support-api-keys", "{keys}");
    assert_eq!(keys["secret"]["items"][0]["key"], "keys.yaml");
    for (kind, child) in CHILDREN {
        let obj: Value = serde_json::from_str(
            &cp.ok(&["get", kind, child, "-o", "json", "--show-managed-fields"])
                .await?,
        )?;
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].clone()),
            (Some("ChatAgent"), uid.clone()),
            "{kind}/{child}"
        );
        let applied = obj["metadata"]["managedFields"].as_array().is_some_and(|m| {
            m.iter()
                // the mesh secret is created once (a value applied again would change it)
                .any(|f| {
                    f["manager"] == "meshchat-operator" && (f["operation"] == "Apply" || kind == "secret")
                })
        });
        assert!(
            applied,
            "{kind}/{child} is server-side applied by meshchat-operator"
        );
    }
    let peers = cp.get("service", "support-peers").await?.unwrap_or_default();
    assert_eq!(peers["spec"]["clusterIP"], "None");
    if let Err(e) = wait_for("3 ready pods", SETTLE, || async {
        (ready_pods(&cp, name).await.ok()? == 3).then_some(())
    })
    .await
    {
        let events = cp
            .ok(&["get", "events", "-n", "default", "-o", "wide"])
            .await
            .unwrap_or_default();
        let pods = cp
            .ok(&["get", "pods", "-n", "default", "-o", "wide"])
            .await
            .unwrap_or_default();
        // why pods are missing (admission refusals show as the StatefulSet's events)
        println!("events:\n{events}\npods:\n{pods}");
        return Err(e);
    }
    let a = wait_for("status.readyReplicas = 3", SETTLE, || async {
        let a = agent(&cp, name).await.ok()?;
        (a["status"]["readyReplicas"] == 3).then_some(a)
    })
    .await?;
    assert_eq!(
        a["status"]["selector"],
        "app.kubernetes.io/instance=support,app.kubernetes.io/name=meshchat-worker"
    );
    assert_eq!(
        condition(&a, "KafkaReachable").map(|c| c["status"].clone()),
        Some("True".into())
    );

    // 3. workers named after the pods, configured from the rendered ConfigMap, join the mesh:
    //    the operator's balancer assigns all partitions; the status shows them and their load
    let cm = cp.get("configmap", "support-config").await?.unwrap_or_default();
    let config = dir.join("worker.yaml");
    std::fs::write(&config, cm["data"]["worker.yaml"].as_str().unwrap_or_default())?;
    let mut workers = Vec::new();
    for i in 0..3 {
        let spec = WorkerSpec::new(&format!("{name}-{i}"), &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_CONFIG", config.display().to_string())
            .env("MESHCHAT_HEARTBEAT_MS", "500");
        workers.push(Worker::start(spec).await?);
    }
    let a = wait_for("Ready with every partition assigned", SETTLE, || async {
        let a = agent(&cp, name).await.ok()?;
        let ready = condition(&a, "Ready")?["status"] == "True";
        let assigned: usize = a["status"]["workers"]
            .as_array()?
            .iter()
            .filter_map(|w| w["partitions"].as_array().map(Vec::len))
            .sum();
        (ready && assigned == 6).then_some(a)
    })
    .await?;
    assert!(a["status"]["assignmentGeneration"].as_u64() >= Some(1));
    let reply_id = send(&workers[0].url, "k8s-conv", "user", "hello from kubectl land").await?;
    wait_reply(&workers[1].url, "k8s-conv", &reply_id, SETTLE).await?;
    // in the meshchat category
    let listed = cp.ok(&["get", "meshchat", "-o", "name"]).await?;
    assert!(listed.contains("chatagent.meshchat.io/support"), "{listed}");
    // conditions are a map keyed by type: one of each, merged by server-side apply
    let crd: Value = serde_json::from_str(
        &cp.ok(&["get", "crd", "chatagents.meshchat.io", "-o", "json"])
            .await?,
    )?;
    let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let table = cp.ok(&["get", "chatagents"]).await?;
    println!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REPLICAS",
            "READY",
            "WORKERS",
            "LOAD",
            "GENERATION",
            "AGE"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["support", "3", "True", "3"]);
    assert!(
        row[5].parse::<u64>().is_ok_and(|g| g >= 1),
        "generation column: {row:?}"
    );

    // 4. kubectl scale goes through /scale to the StatefulSet
    cp.ok(&["scale", "chatagent/support", "--replicas=5"]).await?;
    wait_for("5 ready pods", SETTLE, || async {
        (ready_pods(&cp, name).await.ok()? == 5).then_some(())
    })
    .await?;
    let sts = cp.get("statefulset", name).await?.unwrap_or_default();
    assert_eq!(sts["spec"]["replicas"], 5);
    wait_for("status.replicas = 5", SETTLE, || async {
        (agent(&cp, name).await.ok()?["status"]["replicas"] == 5).then_some(())
    })
    .await?;

    // 5. invalid specs are refused by the API server, naming the field
    let invalid = [
        (
            "lowWatermark: 0.9",
            "spec.rebalance: Invalid value",
            "lowWatermark must be below highWatermark",
        ),
        ("replicas: -1", "spec.replicas", "greater than or equal to 0"),
        (
            "imagePullPolicy: Sometimes",
            "spec.imagePullPolicy: Unsupported value: \"Sometimes\"",
            "\"IfNotPresent\"",
        ),
        (
            "partitions: 3",
            "spec.kafka.partitions",
            "kafka.partitions cannot change once set",
        ),
        (
            "partitions: 12",
            "spec.kafka.partitions",
            "kafka.partitions cannot change once set",
        ),
        (
            "minInsyncReplicas: 2",
            "spec.kafka: Invalid value",
            "kafka.minInsyncReplicas cannot exceed kafka.replicationFactor",
        ),
    ];
    for (edit, field, message) in invalid {
        let bad = match edit {
            "lowWatermark: 0.9" => {
                manifest.replace("cooldownSeconds: 5", "cooldownSeconds: 5\n    lowWatermark: 0.9")
            }
            "replicas: -1" => manifest.replace("replicas: 3", "replicas: -1"),
            "imagePullPolicy: Sometimes" => {
                manifest.replace("  image: ", "  imagePullPolicy: Sometimes\n  image: ")
            }
            "minInsyncReplicas: 2" => manifest.replace("minInsyncReplicas: 1", "minInsyncReplicas: 2"),
            "partitions: 12" => manifest.replace("partitions: 6", "partitions: 12"),
            _ => manifest.replace("partitions: 6", "partitions: 3"),
        };
        let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{edit}: {}", err.trim());
        assert!(!out.status.success(), "{edit} was accepted");
        assert!(err.contains(field) && err.contains(message), "{edit}: {err}");
        // offline too, naming the same field (a change of partitions needs the stored object:
        // only the API server can tell)
        if !edit.starts_with("partitions") {
            let (ok, offline) = validate_offline(&dir, &bad)?;
            let path = field.split(':').next().unwrap_or(field);
            println!("{edit} offline: {}", offline.trim());
            assert!(
                !ok && offline.contains(&format!("{path}: ")),
                "{edit} offline: {offline}"
            );
        }
    }
    let a = agent(&cp, name).await?;
    assert_eq!(a["spec"]["replicas"], 5, "nothing stored from the refused specs");
    assert_eq!(a["spec"]["kafka"]["partitions"], 6);
    // a ChatAgent wanting 3 replicas of each topic (the default) on the one-broker test Kafka
    // (topics of its own, which nobody has created: the factor matters when creating them)
    let rf3 = sample("rf3", &bootstrap, &format!("{prefix}rf3."), 0)
        .replace("    replicationFactor: 1\n    minInsyncReplicas: 1\n", "");
    assert!(!rf3.contains("replicationFactor"));
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&rf3)).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let message = wait_for("Degraded: TooFewBrokers", SETTLE, || async {
        let a = agent(&cp, "rf3").await.ok()?;
        let c = condition(&a, "Degraded")?;
        (c["reason"] == "TooFewBrokers").then(|| c["message"].as_str().unwrap_or_default().to_string())
    })
    .await?;
    println!("rf3: {message}");
    assert!(message.contains("spec.kafka.replicationFactor is 3 but 1 broker answers"));
    cp.ok(&["delete", "chatagent", "rf3"]).await?;

    // 6. editing the spec rolls the children
    let before = sts["spec"]["template"]["metadata"]["annotations"]["meshchat.io/config-hash"].clone();
    let edited = manifest
        .replace("replicas: 3", "replicas: 5")
        .replace("model: fake-model", "model: fake-model-2");
    cp.kubectl_stdin(&["apply", "-f", "-"], Some(&edited)).await?;
    let cm = wait_for("the ConfigMap to follow", SETTLE, || async {
        let cm = cp.get("configmap", "support-config").await.ok()??;
        cm["data"]["worker.yaml"]
            .as_str()?
            .contains("fake-model-2")
            .then_some(cm)
    })
    .await?;
    assert!(
        cm["data"]["worker.yaml"]
            .as_str()
            .is_some_and(|t| t.contains("llm-model: fake-model-2"))
    );
    let sts = wait_for("the pods to roll", SETTLE, || async {
        let s = cp.get("statefulset", name).await.ok()??;
        let hash = &s["spec"]["template"]["metadata"]["annotations"]["meshchat.io/config-hash"];
        let st = &s["status"];
        let rolled = st["updatedReplicas"] == 5
            && st["currentRevision"] == st["updateRevision"]
            && st["readyReplicas"] == 5;
        (*hash != before && rolled).then_some(s)
    })
    .await?;
    println!("rolled to revision {}", sts["status"]["updateRevision"]);

    // 7. autoscaling: idle workers (load 0 against a 0.6 target) bring replicas down to the
    //    minimum through /scale, with an Event saying why
    let patch = r#"{"spec":{"autoscaling":{"enabled":true,"minReplicas":2,"maxReplicas":4,"targetLoad":0.6,"scaleDownStabilizationSeconds":0}}}"#;
    cp.ok(&["patch", "chatagent", name, "--type", "merge", "-p", patch])
        .await?;
    wait_for("the autoscaler to set 2 replicas", SETTLE, || async {
        let a = agent(&cp, name).await.ok()?;
        let s = cp.get("statefulset", name).await.ok()??;
        (a["spec"]["replicas"] == 2 && s["spec"]["replicas"] == 2).then_some(())
    })
    .await?;
    let events = cp
        .ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=support",
            "-o",
            "json",
        ])
        .await?;
    let events: Value = serde_json::from_str(&events)?;
    // (first clamped to maxReplicas while the restarted balancer has no load yet, then to 2;
    // the API server keeps repeats of one reason and action as a series of the first note)
    let scaled: Vec<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "Scaled" && e["action"] == "Autoscale")
        .filter_map(|e| e["note"].as_str().map(str::to_string))
        .collect();
    println!("autoscale events: {scaled:?}");
    assert!(
        scaled.iter().any(|n| n.starts_with("replicas 5 -> ")),
        "an Autoscale event"
    );

    // 7b. the documented HPA and KEDA ScaledObjects apply; while one targets the ChatAgent the
    //     built-in autoscaler yields (condition + Event) and scales again once it is gone
    let yielded = |reason: &'static str| {
        let cp = &cp;
        move || async move {
            let a = agent(cp, name).await.ok()?;
            let c = condition(&a, "ExternalAutoscaler")?;
            (c["reason"] == reason).then(|| c["message"].as_str().unwrap_or_default().to_string())
        }
    };
    cp.ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        "../docs/examples/autoscaling/keda-kafka.yaml",
    ])
    .await?;
    let builtin = wait_for("ExternalAutoscaler False/BuiltIn", SETTLE, yielded("BuiltIn")).await?;
    println!("before: {builtin}");
    cp.ok(&["apply", "-f", "../docs/examples/autoscaling/hpa.yaml"])
        .await?;
    let message = wait_for("yielding to the HPA", SETTLE, yielded("HorizontalPodAutoscaler")).await?;
    assert!(
        message.starts_with("HorizontalPodAutoscaler support scales"),
        "{message}"
    );
    // replicas set by hand (as the HPA would) stay: the idle mesh is not scaled back to 2
    cp.ok(&["scale", "chatagent", name, "--replicas=3"]).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let a = agent(&cp, name).await?;
    assert_eq!(a["spec"]["replicas"], 3, "the built-in autoscaler stood back");
    cp.ok(&["delete", "hpa", "support"]).await?;
    cp.ok(&["apply", "-f", "../docs/examples/autoscaling/keda-prometheus.yaml"])
        .await?;
    let message = wait_for("yielding to the ScaledObject", SETTLE, yielded("ScaledObject")).await?;
    assert!(
        message.starts_with("ScaledObject support-load scales"),
        "{message}"
    );
    cp.ok(&["delete", "scaledobject", "support-load"]).await?;
    wait_for("the built-in autoscaler back at 2 replicas", SETTLE, || async {
        let a = agent(&cp, name).await.ok()?;
        (a["spec"]["replicas"] == 2).then_some(())
    })
    .await?;
    let events: Value = serde_json::from_str(
        &cp.ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=support,reason=AutoscalingYielded",
            "-o",
            "json",
        ])
        .await?,
    )?;
    let notes: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("HorizontalPodAutoscaler support"))
            && notes.iter().any(|n| n.starts_with("ScaledObject support-load")),
        "{notes:?}"
    );

    let off = r#"{"spec":{"autoscaling":{"enabled":false}}}"#;
    cp.ok(&["patch", "chatagent", name, "--type", "merge", "-p", off])
        .await?;

    // 8. the leading operator dies: the other one takes the lease and keeps reconciling
    let leader_idx = ops.iter().position(|o| o.identity == leader).unwrap_or(0);
    ops[leader_idx].kill().await?;
    let t = std::time::Instant::now();
    let next = wait_for("the other operator to lead", SETTLE, || async {
        lease_holder(&cp).await.filter(|h| *h != leader)
    })
    .await?;
    println!(
        "{next} took over {:.1}s after {leader} was killed",
        t.elapsed().as_secs_f64()
    );
    cp.ok(&["scale", "chatagent/support", "--replicas=3"]).await?;
    wait_for("the new leader to scale the StatefulSet", SETTLE, || async {
        let s = cp.get("statefulset", name).await.ok()??;
        (s["spec"]["replicas"] == 3).then_some(())
    })
    .await?;
    wait_for("3 ready pods", SETTLE, || async {
        (ready_pods(&cp, name).await.ok()? == 3).then_some(())
    })
    .await?;

    // 9. deleting the ChatAgent removes its children (owner references, garbage collector)
    cp.ok(&["delete", "chatagent", name, "--wait=true"]).await?;
    wait_for("children to be garbage collected", SETTLE, || async {
        for (kind, child) in CHILDREN {
            if cp.get(kind, child).await.ok()?.is_some() {
                return None;
            }
        }
        (ready_pods(&cp, name).await.ok()? == 0).then_some(())
    })
    .await?;

    // 10. a namespace-scoped install: Roles in its namespace and nothing cluster-wide; its
    //     operator manages the ChatAgents there and nothing elsewhere
    for o in &mut ops {
        o.kill().await?;
    }
    let scoped = "team-scoped";
    cp.ok(&["create", "namespace", scoped]).await?;
    cp.ok(&["label", "namespace", scoped, "--overwrite", RESTRICTED])
        .await?;
    let chart = cp
        .helm_template_with(
            "scoped",
            std::path::Path::new("../charts/meshchat"),
            SYSTEM,
            &[
                "--set",
                "watchNamespaces={team-scoped}",
                "--set",
                "operator.replicas=0",
            ],
        )
        .await?;
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&chart)).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = cp
        .ok(&[
            "create",
            "token",
            "scoped-meshchat",
            "-n",
            SYSTEM,
            "--duration=1h",
        ])
        .await?;
    let scoped_kc = cp.kubeconfig_with_token(&token, &dir.join("scoped.kubeconfig"))?;
    for (args, want) in [
        (vec!["list", "chatagents.meshchat.io", "-n", scoped], true),
        (vec!["get", "secrets", "-n", scoped], true),
        (vec!["list", "chatagents.meshchat.io", "-A"], false),
        (vec!["list", "statefulsets", "-n", "default"], false),
        (vec!["get", "secrets", "-n", "default"], false),
    ] {
        assert_eq!(
            can(scoped_kc.clone(), args.clone()).await?,
            want,
            "scoped can-i {args:?}"
        );
    }
    let mut scoped_op = Operator::start_with(
        &scoped_kc,
        SYSTEM,
        "operator-scoped",
        &dir,
        &["--namespaces", scoped, "--lease-name", "meshchat-scoped"],
    )
    .await?;
    let inside = sample("inside", &bootstrap, &format!("{prefix}in."), 1)
        .replace("namespace: default", "namespace: team-scoped");
    let outside = sample("outside", &bootstrap, &format!("{prefix}out."), 1);
    for m in [&inside, &outside] {
        cp.kubectl_stdin(&["apply", "-f", "-"], Some(m)).await?;
    }
    wait_for(
        "the scoped operator's StatefulSet and mesh Secret",
        SETTLE,
        || async {
            cp.ok(&["get", "statefulset", "inside", "-n", scoped])
                .await
                .ok()?;
            cp.ok(&["get", "secret", "inside-mesh", "-n", scoped])
                .await
                .ok()?;
            cp.ok(&["get", "networkpolicy", "scoped-meshchat-workers", "-n", scoped])
                .await
                .ok()
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        cp.get("statefulset", "outside").await?.is_none(),
        "the scoped operator left the ChatAgent outside its namespace alone"
    );
    let log = std::fs::read_to_string(&scoped_op.log).unwrap_or_default();
    assert!(
        !log.contains("forbidden"),
        "the scoped operator's RBAC sufficed: {log}"
    );
    // the operator logs one JSON object per line (MESHCHAT_LOG_FORMAT=json, the chart's default)
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{e}: {line}"))?;
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    println!("namespace-scoped install: reconciled {scoped}/inside, left default/outside alone");
    scoped_op.kill().await?;
    for w in &mut workers {
        w.kill().await?;
    }
    Ok(())
}
