//! The Helm chart as a platform team meets it: `helm lint`, `helm template` with the default
//! values and with every option changed (the rendered objects checked), values the schema
//! refuses, the generated README, alert and dashboard queries that name series the processes
//! really export — and on a real kube-apiserver: server-side dry-runs of both renders, the
//! previous chart version installed with `helm install`, upgraded as README.md says, and the
//! NOTES' walk-through run as printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use meshchat_tests::k8s::{ControlPlane, helm, tools};
use meshchat_tests::{
    FakeLlm, Worker, WorkerSpec, broker, gauge, http, send, unique_prefix, wait_for, wait_reply,
};
use serde_json::Value;

const CHART: &str = "../charts/meshchat";
/// The previous chart version as released (`helm package` of charts/meshchat at 0.1.0).
const PREVIOUS: &str = "chart/meshchat-0.1.0.tgz";
/// Every option set away from its default.
const FULL: &str = "chart/values-full.yaml";
const NS: &str = "meshchat-system";

fn objects(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("helm's output is YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objs)))
}

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

async fn helm_ok(bin: &Path, args: &[&str], kubeconfig: Option<&Path>) -> anyhow::Result<String> {
    let out = helm(bin, args, kubeconfig).await?;
    if !out.status.success() {
        bail!(
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

async fn render(bin: &Path, extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut args = vec!["template", "meshchat", CHART, "--namespace", NS];
    args.extend(extra);
    objects(&helm_ok(bin, &args, None).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_lints_renders_and_refuses_bad_values() -> anyhow::Result<()> {
    let bin = tools().await?;
    for extra in [&[][..], &["-f", FULL][..]] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(extra);
        let out = helm_ok(&bin, &args, None).await?;
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
    }

    // defaults: the operator, its account and RBAC, the metrics Service, the workers' policy —
    // and no monitoring object (their CRDs may not exist)
    let objs = render(&bin, &[]).await?;
    let mut got: Vec<String> = kinds(&objs);
    got.sort();
    assert_eq!(
        got,
        [
            "ClusterRole/meshchat",
            "ClusterRoleBinding/meshchat",
            "Deployment/meshchat",
            "NetworkPolicy/meshchat-workers",
            "Role/meshchat-leader",
            "RoleBinding/meshchat-leader",
            "Service/meshchat-metrics",
            "ServiceAccount/meshchat",
        ]
    );
    let d = find(&objs, "Deployment", "meshchat");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/meshchat/operator:0.1.0", "appVersion tag");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for absent in [
        "imagePullSecrets",
        "priorityClassName",
        "topologySpreadConstraints",
    ] {
        assert!(pod[absent].is_null(), "{absent} not rendered by default");
    }
    let role = find(&objs, "ClusterRole", "meshchat");
    let groups: BTreeSet<&str> = role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["apiGroups"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        groups.contains("autoscaling") && groups.contains("keda.sh"),
        "the operator reads HPAs and ScaledObjects (to yield to them): {groups:?}"
    );

    // every option changed
    let objs = render(&bin, &["-f", FULL]).await?;
    let d = find(&objs, "Deployment", "chat-ops");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(c["image"], "registry.example/meshchat/operator:9.9.9");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["priorityClassName"], "platform-critical");
    assert_eq!(pod["serviceAccountName"], "meshchat-ops");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    let meta = &d["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"]["team"], "platform");
    assert_eq!(
        meta["labels"]["app.kubernetes.io/name"], "meshchat-operator",
        "selector kept"
    );
    assert_eq!(meta["annotations"]["example.com/owner"], "platform");
    let args: Vec<&str> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "run",
            "--lease-seconds=20",
            "--worker-image=registry.example/meshchat/worker:9.9.9",
            "--namespaces=team-a,team-b",
            "--lease-name=chat-ops-leader",
        ]
    );
    let env: Vec<&str> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "MESHCHAT_LOG",
            "MESHCHAT_LOG_FORMAT",
            "RUST_BACKTRACE"
        ]
    );
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    let sa = find(&objs, "ServiceAccount", "meshchat-ops");
    assert_eq!(sa["metadata"]["annotations"]["iam.example.com/role"], "meshchat");
    // namespace-scoped: Roles in both namespaces, nothing cluster-wide
    assert!(!objs.iter().any(|o| o["kind"] == "ClusterRole"));
    let roles = objs
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "chat-ops")
        .count();
    assert_eq!(roles, 2);
    for ns in ["team-a", "team-b"] {
        let np = objs
            .iter()
            .find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["namespace"] == ns)
            .context("a policy per namespace")?;
        let internal = np["spec"]["ingress"][1]["from"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            internal.iter().any(
                |p| p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
            ),
            "the scrapers reach the metrics port: {np}"
        );
        assert!(internal.iter().any(|p| p["ipBlock"]["cidr"] == "10.0.0.0/16"));
        assert_eq!(
            np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ingress"
        );
    }
    let sm = find(&objs, "ServiceMonitor", "chat-ops-operator");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "1m");
    assert_eq!(
        sm["spec"]["endpoints"][0]["honorLabels"], true,
        "ChatAgents' namespaces kept"
    );
    let pm = find(&objs, "PodMonitor", "chat-ops-workers");
    assert_eq!(
        pm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["team-a", "team-b"])
    );
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "internal");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "meshchat-worker"
    );
    let rule = find(&objs, "PrometheusRule", "chat-ops");
    let alerts = alerts(rule);
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "MeshChatWorkerDown",
            "MeshChatWorkersNotReady",
            "MeshChatConsumerLagHigh",
            "MeshChatPartitionsUnassigned",
            "MeshChatLLMErrorRate",
            "MeshChatChatAgentDegraded",
        ]
    );
    let expr = |name: &str| {
        alerts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    };
    assert!(
        expr("MeshChatConsumerLagHigh").ends_with("> 2500"),
        "threshold from values"
    );
    assert!(expr("MeshChatLLMErrorRate").trim_end().ends_with("> 0.1"));
    assert!(
        expr("MeshChatWorkerDown").contains(r#"job="meshchat-system/chat-ops-workers""#),
        "the PodMonitor's job"
    );
    assert!(
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["labels"]["team"] == "platform" && r["labels"]["severity"].is_string())
    );
    let cm = find(&objs, "ConfigMap", "chat-ops-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dash: Value = serde_json::from_str(cm["data"]["meshchat.json"].as_str().unwrap_or_default())?;
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 8), "{dash}");

    // values the schema refuses, each naming where (a JSON pointer) and what; nothing renders
    for (set, says) in [
        ("operator.replicas=-1", "/operator/replicas"),
        (
            "operator.image.pullPolicy=Sometimes",
            "/operator/image/pullPolicy",
        ),
        ("operatr.replicas=2", "operatr"),
        (
            "metrics.prometheusRule.llmErrorRatio=2",
            "/metrics/prometheusRule/llmErrorRatio",
        ),
        (
            "metrics.podMonitor.interval=often",
            "/metrics/podMonitor/interval",
        ),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        (
            "networkPolicy.kubeletCIDRs={10.0.0.1}",
            "/networkPolicy/kubeletCIDRs/0",
        ),
        // a selector label would orphan the Deployment's pods
        (
            "operator.podLabels.app\\.kubernetes\\.io/name=mine",
            "invalid propertyName 'app.kubernetes.io/name'",
        ),
    ] {
        let out = helm(&bin, &["template", "meshchat", CHART, "--set", set], None).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} accepted");
        assert!(out.stdout.is_empty(), "{set}: nothing rendered");
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set}: {err}"
        );
        assert!(err.contains(says), "{set}: the error names {says}: {err}");
    }
    let out = helm(
        &bin,
        &[
            "template",
            "meshchat",
            CHART,
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
        ],
        None,
    )
    .await?;
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("metrics.serviceMonitor.enabled needs metrics.service.enabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the README is generated from values.yaml's comments and is current
    let tmp = std::env::temp_dir().join("meshchat-tests").join("chart-docs");
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(Path::new(CHART), &tmp.join("meshchat"))?;
    let out = tokio::process::Command::new(bin.join("helm-docs"))
        .args(["--chart-search-root"])
        .arg(&tmp)
        .output()
        .await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = std::fs::read_to_string(tmp.join("meshchat/README.md"))?;
    let committed = std::fs::read_to_string(Path::new(CHART).join("README.md"))?;
    assert!(
        fresh == committed,
        "charts/meshchat/README.md is stale: run `make chart-docs`"
    );
    for key in [
        "operator.topologySpreadConstraints",
        "metrics.prometheusRule.consumerLagRecords",
        "networkPolicy.metricsScrapers",
    ] {
        assert!(committed.contains(key), "the README lists {key}");
    }
    Ok(())
}

/// (alert, expression) of a PrometheusRule.
fn alerts(rule: &Value) -> Vec<(String, String)> {
    rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| {
            (
                r["alert"].as_str().unwrap_or_default().to_string(),
                r["expr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Series names an exposition offers: counters as `_total`, histograms as `_bucket`, `_sum`,
/// `_count`, gauges as they are.
fn series(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            match kind {
                "counter" => {
                    out.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("meshchat_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_the_dashboard_query_series_the_processes_export() -> anyhow::Result<()> {
    let bin = tools().await?;
    let objs = render(&bin, &["-f", FULL]).await?;
    let mut queried = BTreeSet::new();
    for (_, expr) in alerts(find(&objs, "PrometheusRule", "chat-ops")) {
        queried.extend(names_in(&expr));
    }
    let dashboard = find(&objs, "ConfigMap", "chat-ops-dashboard")["data"]["meshchat.json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    queried.extend(names_in(&dashboard));
    assert!(queried.len() >= 15, "{queried:?}");

    // a real worker's exposition once it has answered (families appear with their first
    // series), and the operator's with one ChatAgent observed
    let bootstrap = broker().await?;
    let prefix = unique_prefix("chartm");
    let llm = FakeLlm::start(&[]).await?;
    let worker = Worker::start(WorkerSpec::new("w0", &prefix, &bootstrap, &llm.url)?).await?;
    let id = send(&worker.url, "chart-conv", "alice", "hello").await?;
    wait_reply(&worker.url, "chart-conv", &id, Duration::from_secs(30)).await?;
    let operator = meshchat_operator::metrics::Metrics::default();
    let status = serde_json::from_value(serde_json::json!({
        "replicas": 3, "readyReplicas": 3, "load": 0.2, "migrations": 1,
        "workers": [{"name": "w-0", "partitions": [0, 1], "load": 0.2}],
        "conditions": [{"type": "Degraded", "status": "False", "reason": "AsExpected",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }))?;
    operator.agents.observe("ns", "support", 2, 3, &status);
    let operator = series(&operator.encode());
    // (the consumer-lag gauges follow the owner's first lag query: poll a while)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let text = http()
            .get(format!("{}/metrics", worker.internal_url))
            .send()
            .await?
            .text()
            .await?;
        let mut exported = series(&text);
        exported.extend(operator.iter().cloned());
        let missing: Vec<String> = queried
            .iter()
            .filter(|n| !exported.contains(*n))
            .cloned()
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(missing.is_empty(), "queried but never exported: {missing:?}");
    // the load factor autoscalers target is a gauge of each worker, and reads 0 when idle
    let load: f64 = wait_for("the load factor gauge", Duration::from_secs(10), || {
        gauge(&worker.internal_url, "meshchat_load_factor")
    })
    .await?;
    assert_eq!(load, 0.0, "idle");
    Ok(())
}

/// The first ```sh block after `heading` in a Markdown text.
fn sh_block(markdown: &str, heading: &str) -> anyhow::Result<String> {
    let rest = &markdown[markdown.find(heading).context("heading")?..];
    let start = rest.find("```sh\n").context("a sh block")? + "```sh\n".len();
    let len = rest[start..].find("```").context("its end")?;
    Ok(rest[start..start + len].to_string())
}

/// Runs `script` with bash in `cwd`, with this control plane's kubectl and helm first on PATH.
async fn bash(cp: &ControlPlane, script: &str, cwd: &Path) -> anyhow::Result<()> {
    let path = format!(
        "{}:{}",
        cp.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = std::env::temp_dir().join("meshchat-tests").join("helm-home");
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd)
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("OPENAI_API_KEY", "sk-test")
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The bash lines of a NOTES section: from the line starting with `first` through the one
/// starting with `last`, unindented.
fn script(notes: &str, first: &str, last: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = notes.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(first))
        .context("first line")?;
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.starts_with(last))
            .context("last line")?;
    Ok(lines[start..=end].join("\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installs_dry_runs_and_upgrades_on_a_real_kube_apiserver() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join("meshchat-tests").join("chart-k8s");
    let cp = ControlPlane::start(&dir).await?;
    let kubeconfig = Some(cp.kubeconfig.as_path());
    // prometheus-operator's and KEDA's CRDs, from their modules (tests/k8s/build.sh)
    cp.install_crds(&[&cp.bin.join("crds/monitoring"), &cp.bin.join("crds/keda")])
        .await?;
    for ns in [NS, "team-a", "team-b", "monitoring", "ingress"] {
        cp.ok(&["create", "namespace", ns]).await?;
    }

    // both renders pass the API server's validation (the CRDs' schemas for the monitors)
    for extra in [&[][..], &["-f", FULL][..]] {
        let mut args = vec!["template", "meshchat", CHART, "--namespace", NS];
        args.extend(extra);
        let yaml = helm_ok(&cp.bin, &args, None).await?;
        let out = cp
            .kubectl_stdin(
                &["apply", "--dry-run=server", "--server-side", "-f", "-"],
                Some(&yaml),
            )
            .await?;
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // the previous chart version, installed as a user would
    let previous = PathBuf::from(PREVIOUS).canonicalize()?.display().to_string();
    helm_ok(
        &cp.bin,
        &["install", "meshchat", &previous, "--namespace", NS],
        kubeconfig,
    )
    .await?;
    // a ChatAgent as written for 0.1.0: today's example without the fields 0.2.0 added
    let agent = std::fs::read_to_string("../docs/examples/chatagent.yaml")?;
    let old_agent: String = agent
        .lines()
        .filter(|l| !l.contains("replicationFactor") && !l.contains("minInsyncReplicas"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(old_agent.len(), agent.len());
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&old_agent)).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // the upgrade as README.md documents it (the new CRD first: helm never upgrades crds/),
    // then monitoring turned on as its next section says — each run as printed, from the repo
    let readme = std::fs::read_to_string(Path::new(CHART).join("README.md"))?;
    for section in ["## Upgrading", "## Monitoring"] {
        let commands = sh_block(&readme, section)?;
        println!("{section}:\n{commands}");
        bash(&cp, &commands, Path::new("..")).await?;
    }
    let status: Value =
        serde_json::from_str(&helm_ok(&cp.bin, &["list", "-n", NS, "-o", "json"], kubeconfig).await?)?;
    assert_eq!(status[0]["chart"], "meshchat-0.2.0", "{status}");
    assert_eq!(status[0]["revision"], "3", "installed, upgraded, monitoring on");
    assert_eq!(status[0]["status"], "deployed");
    let d: Value = serde_json::from_str(
        &cp.ok(&["get", "deployment", "meshchat", "-n", NS, "-o", "json"])
            .await?,
    )?;
    assert_eq!(d["metadata"]["labels"]["helm.sh/chart"], "meshchat-0.2.0");
    for (kind, name) in [
        ("servicemonitor", "meshchat-operator"),
        ("podmonitor", "meshchat-workers"),
        ("prometheusrule", "meshchat"),
        ("configmap", "meshchat-dashboard"),
    ] {
        cp.ok(&["get", kind, name, "-n", NS]).await?;
    }
    // the README's --set for the scrapers reaches the workers' policy
    let np: Value = serde_json::from_str(
        &cp.ok(&["get", "networkpolicy", "meshchat-workers", "-n", NS, "-o", "json"])
            .await?,
    )?;
    assert!(
        np["spec"]["ingress"][1]["from"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"),
        "{np}"
    );
    let crd: Value = serde_json::from_str(
        &cp.ok(&["get", "crd", "chatagents.meshchat.io", "-o", "json"])
            .await?,
    )?;
    let kafka =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["kafka"];
    assert!(
        kafka["properties"]["replicationFactor"].is_object(),
        "the served CRD is the new chart's: {kafka}"
    );
    assert_eq!(crd["spec"]["names"]["categories"][0], "meshchat");
    // the ChatAgent made under 0.1.0 is still there, now with the new fields' defaults, and
    // today's example (which sets them) is valid
    let a: Value = serde_json::from_str(
        &cp.ok(&["get", "chatagent", "support", "-n", "default", "-o", "json"])
            .await?,
    )?;
    assert_eq!(a["spec"]["replicas"], 3);
    assert_eq!(
        a["spec"]["kafka"]["replicationFactor"], 3,
        "defaulted on read: {a}"
    );
    let out = cp
        .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&agent))
        .await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // NOTES.txt: no placeholder, and its walk-through works as printed (up to the port-forward,
    // which needs a kubelet)
    let notes = helm_ok(&cp.bin, &["get", "notes", "meshchat", "-n", NS], kubeconfig).await?;
    println!("{notes}");
    assert!(
        !notes.contains("<name>") && !notes.contains("example.com"),
        "{notes}"
    );
    assert!(notes.contains("port-forward svc/support 8080:8080"));
    let steps = script(&notes, "KEY=", "YAML")?;
    let work = dir.join("notes");
    std::fs::create_dir_all(&work)?;
    bash(&cp, &steps, &work).await?;
    let keys = std::fs::read_to_string(work.join("keys.yaml"))?;
    let sha = keys.split("sha256: ").nth(1).unwrap_or_default();
    assert!(
        sha.len() >= 64 && sha[..64].chars().all(|c| c.is_ascii_hexdigit()),
        "{keys}"
    );
    let a: Value = serde_json::from_str(
        &cp.ok(&["get", "chatagent", "support", "-n", NS, "-o", "json"])
            .await?,
    )?;
    assert_eq!(a["spec"]["auth"]["apiKeysSecretRef"]["name"], "support-api-keys");
    cp.ok(&["get", "secret", "support-api-keys", "-n", NS]).await?;
    Ok(())
}
