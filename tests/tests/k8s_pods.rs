//! Worker pods going away on a real kube-apiserver, under chat load. kwok plays the nodes; no
//! kubelet runs containers, so this test plays the kubelet's part for the worker processes,
//! which are named after the StatefulSet's pods: it starts one per new pod, runs the pod's
//! preStop hook (`meshchat-worker drain`) then SIGTERM for a pod being deleted and deletes the
//! pod once its process exited, and kills the process of a pod force-deleted. (kwok leaves
//! pods annotated `meshchat.test/kubelet` to it: see tests/k8s/gen-kwok-config.sh.)
//!
//! 1. A scale-down from 5 to 2 replicas drains each pod before it goes: every drain hands its
//!    partitions over, and no chat message is lost or answered twice.
//! 2. A pod deleted without a drain (its node lost; `kubectl delete --force`): the operator
//!    sees the pod go and fails its partitions over at once, long before the heartbeat timeout
//!    (10 s here). Measured: pod deleted → every partition it held live on another worker.
//!
//! The counts are taken from the `chat.messages` log itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshchat_tests::k8s::{ControlPlane, Operator};
use meshchat_tests::*;
use serde_json::Value;

// bounds for slow machines, not measurements
const SETTLE: Duration = Duration::from_secs(120);
const NAME: &str = "pods";
const PARTITIONS: usize = 12;
/// Failover by heartbeat alone would take this long; the pod watch must beat it.
const HEARTBEAT_TIMEOUT_S: u64 = 10;
/// Pod deletions measured (`MESHCHAT_POD_SAMPLES` for more: see docs/benchmarks.md).
fn samples() -> usize {
    std::env::var("MESHCHAT_POD_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}

fn manifest(bootstrap: &str, prefix: &str, replicas: i32) -> String {
    format!(
        "apiVersion: meshchat.io/v1alpha1
kind: ChatAgent
metadata:
  name: {NAME}
  namespace: default
spec:
  replicas: {replicas}
  image: ghcr.io/meshchat/worker:test
  podAnnotations:
    meshchat.test/kubelet: processes
  kafka:
    bootstrapServers: \"{bootstrap}\"
    topicPrefix: \"{prefix}\"
    partitions: {PARTITIONS}
    replicationFactor: 1
    minInsyncReplicas: 1
  llm:
    model: fake-model
  rebalance:
    intervalSeconds: 2
    heartbeatTimeoutSeconds: {HEARTBEAT_TIMEOUT_S}
    cooldownSeconds: 4
  auth:
    apiKeysSecretRef: {{name: {NAME}-api-keys, key: keys.yaml}}
"
    )
}

/// The kubelet's part for the worker processes.
struct Kubelet {
    prefix: String,
    bootstrap: String,
    llm: String,
    config: PathBuf,
    procs: BTreeMap<String, Worker>,
    /// The Service's endpoints: URLs of running workers whose pods are not being deleted.
    serving: Arc<Mutex<Vec<String>>>,
    /// What each preStop drain answered, by pod.
    drains: Vec<(String, Value)>,
}

impl Kubelet {
    async fn pods(cp: &ControlPlane) -> anyhow::Result<Vec<Value>> {
        let pods: Value = serde_json::from_str(
            &cp.ok(&[
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/instance={NAME}"),
                "-o",
                "json",
            ])
            .await?,
        )?;
        Ok(pods["items"].as_array().cloned().unwrap_or_default())
    }

    fn publish(&self) {
        let urls = self.procs.values().map(|w| w.url.clone()).collect();
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = urls;
    }

    /// One look at the pods: start a process for each new one; drain, stop and delete those
    /// being deleted (in parallel, as each node's kubelet would); kill those force-deleted.
    async fn sync(&mut self, cp: &ControlPlane) -> anyhow::Result<()> {
        let pods = Self::pods(cp).await?;
        let name = |p: &Value| p["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut stopping = Vec::new();
        for pod in &pods {
            let n = name(pod);
            let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
            if deleting {
                if let Some(w) = self.procs.remove(&n) {
                    stopping.push((n, w));
                }
            } else if !self.procs.contains_key(&n) {
                let spec = WorkerSpec::new(&n, &self.prefix, &self.bootstrap, &self.llm)?
                    .env("MESHCHAT_CONFIG", self.config.display().to_string())
                    .env("MESHCHAT_HEARTBEAT_MS", "500");
                self.procs.insert(n, Worker::start(spec).await?);
            }
        }
        let live: Vec<String> = pods.iter().map(name).collect();
        let gone: Vec<String> = self.procs.keys().filter(|n| !live.contains(n)).cloned().collect();
        for n in gone {
            if let Some(mut w) = self.procs.remove(&n) {
                w.kill().await?;
            }
        }
        // endpoints drop a terminating pod at once
        self.publish();
        let stops = stopping.into_iter().map(|(n, mut w)| async move {
            let drained = w.drain_command(&[]).await;
            let exited = w.stop().await;
            let deleted = cp
                .ok(&["delete", "pod", &n, "--grace-period=0", "--force", "--wait=false"])
                .await;
            anyhow::Ok((n, drained?, exited?, deleted?))
        });
        for r in futures::future::join_all(stops).await {
            let (n, drained, exited, _) = r?;
            println!("kubelet: {n} drained ({drained}), exited {exited}");
            self.drains.push((n, drained));
        }
        Ok(())
    }

    /// The process of pod `n` dies (SIGKILL), as on a lost node.
    async fn kill(&mut self, n: &str) -> anyhow::Result<()> {
        if let Some(mut w) = self.procs.remove(n) {
            w.kill().await?;
        }
        self.publish();
        Ok(())
    }

    async fn status(&self, n: &str) -> Option<Value> {
        self.procs.get(n)?.status().await.ok()
    }
}

/// Chat traffic through whichever workers serve, as through the Service: a send refused (a
/// worker draining, or gone) is tried again on another.
fn chat_load(serving: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut i = 0usize;
        let mut pending = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let urls = serving.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if !urls.is_empty() {
                let (accepted, c) = (accepted.clone(), format!("pods-conv-{}", i % 24));
                pending.push(tokio::spawn(async move {
                    for attempt in 0..20 {
                        let url = &urls[(i + attempt) % urls.len()];
                        if send(url, &c, "ann", &format!("message {i}")).await.is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
                i += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        futures::future::join_all(pending).await;
        accepted.load(Ordering::Relaxed)
    })
}

/// Waits for a steady mesh: the `n` running workers have read the latest table, are healthy,
/// and hold every partition between them, each once and live. (A worker that has just started
/// takes about a second to read the tables; a failover onto it waits for that.)
async fn settled(cp: &ControlPlane, kubelet: &Kubelet, n: usize) -> anyhow::Result<()> {
    wait_for(
        &format!("{n} workers serving every partition"),
        SETTLE,
        || async {
            if kubelet.procs.len() != n {
                return None;
            }
            let agent = cp.get("chatagent", NAME).await.ok()??;
            let generation = agent["status"]["assignmentGeneration"].as_u64()?;
            let mut live = Vec::new();
            for name in kubelet.procs.keys() {
                let s = kubelet.status(name).await?;
                if s["status"] != "healthy" || s["generation"].as_u64() != Some(generation) {
                    return None;
                }
                for (p, phase) in s["phases"].as_object()? {
                    if phase == "live" {
                        live.push(p.clone());
                    }
                }
            }
            let count = live.len();
            live.sort();
            live.dedup();
            (count == PARTITIONS && live.len() == PARTITIONS).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_pods_drain_on_scale_down_and_fail_over_at_once_when_deleted() -> anyhow::Result<()> {
    let _serial = serial().await;
    let dir = std::env::temp_dir().join("meshchat-tests").join("k8s-pods");
    let cp = ControlPlane::start(&dir).await?;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("k8s-pods");
    let llm = FakeLlm::start(&["--token-latency-ms", "2"]).await?;
    cp.install_crds(&[Path::new("../crds/chatagent.crd.yaml")])
        .await?;
    let mut operator = Operator::start(&cp.kubeconfig, "default", "operator", &dir).await?;
    let out = cp
        .kubectl_stdin(&["apply", "-f", "-"], Some(&manifest(&bootstrap, &prefix, 5)))
        .await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cm = wait_for("the rendered worker configuration", SETTLE, || async {
        cp.get("configmap", &format!("{NAME}-config")).await.ok()?
    })
    .await?;
    let config = dir.join("worker.yaml");
    std::fs::write(&config, cm["data"]["worker.yaml"].as_str().unwrap_or_default())?;
    let mut kubelet = Kubelet {
        prefix: prefix.clone(),
        bootstrap: bootstrap.clone(),
        llm: llm.url.clone(),
        config,
        procs: BTreeMap::new(),
        serving: Arc::default(),
        drains: Vec::new(),
    };
    wait_for("5 pods", SETTLE, || async {
        (Kubelet::pods(&cp).await.ok()?.len() == 5).then_some(())
    })
    .await?;
    kubelet.sync(&cp).await?;
    settled(&cp, &kubelet, 5).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = chat_load(kubelet.serving.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. scale-down 5 → 2 under load: each pod drains before it goes
    cp.ok(&["scale", &format!("chatagent/{NAME}"), "--replicas=2"])
        .await?;
    let started = Instant::now();
    while kubelet.procs.len() > 2 || Kubelet::pods(&cp).await?.len() > 2 {
        anyhow::ensure!(started.elapsed() < SETTLE, "the scale-down did not finish");
        kubelet.sync(&cp).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("scale-down 5 → 2 done in {:?}", started.elapsed());
    assert_eq!(kubelet.drains.len(), 3, "{:?}", kubelet.drains);
    for (pod, drained) in &kubelet.drains {
        assert_eq!(drained["drained"], "handedOver", "{pod}: {drained}");
    }
    settled(&cp, &kubelet, 2).await?;

    // 2. pods deleted without a drain: measured until their partitions are live elsewhere
    cp.ok(&["scale", &format!("chatagent/{NAME}"), "--replicas=3"])
        .await?;
    let samples = samples();
    // the pod watch's notices from here on are the deletions' (the scale-down's came before)
    let gone_before = std::fs::read_to_string(&operator.log)?
        .matches("worker pod gone; failing over at once")
        .count();
    let mut took = Vec::new();
    for sample in 0..samples {
        wait_for("3 pods", SETTLE, || async {
            (Kubelet::pods(&cp).await.ok()?.len() == 3).then_some(())
        })
        .await?;
        kubelet.sync(&cp).await?;
        settled(&cp, &kubelet, 3).await?;
        // the worker holding the most partitions
        let mut held = Vec::new();
        for n in kubelet.procs.keys() {
            let owned: Vec<i64> = kubelet
                .status(n)
                .await
                .and_then(|s| {
                    s["ownedPartitions"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                })
                .unwrap_or_default();
            held.push((owned.len(), n.clone(), owned));
        }
        held.sort();
        let Some((_, victim, owned)) = held.pop() else {
            anyhow::bail!("no workers");
        };
        anyhow::ensure!(!owned.is_empty(), "nobody holds a partition: {held:?}");
        kubelet.kill(&victim).await?;
        let deleted = Instant::now();
        cp.ok(&[
            "delete",
            "pod",
            &victim,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])
        .await?;
        let survivors: Vec<String> = kubelet.procs.keys().cloned().collect();
        wait_for("the deleted pod's partitions live elsewhere", SETTLE, || async {
            let mut live = Vec::new();
            for n in &survivors {
                let s = kubelet.status(n).await?;
                for (p, phase) in s["phases"].as_object()? {
                    if phase == "live" {
                        live.push(p.parse::<i64>().ok()?);
                    }
                }
            }
            owned.iter().all(|p| live.contains(p)).then_some(())
        })
        .await?;
        let t = deleted.elapsed();
        println!(
            "sample {sample}: {victim} (partitions {owned:?}) deleted → served again in {} ms",
            t.as_millis()
        );
        took.push(t);
    }
    took.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "pod deleted → partitions served again over {samples} deletions: median {} ms, p99 {} ms, max {} ms \
         (heartbeat timeout {HEARTBEAT_TIMEOUT_S} s)",
        ms(took[took.len() / 2]),
        ms(took[(took.len() * 99).div_ceil(100) - 1]),
        ms(took[took.len() - 1])
    );
    // a functional bound, not a performance one: failover came from the pod watch, not from
    // heartbeats running out (which takes the whole timeout after the last heartbeat)
    for t in &took {
        assert!(t.as_secs() < HEARTBEAT_TIMEOUT_S / 2, "{took:?}");
    }
    let log = std::fs::read_to_string(&operator.log)?;
    assert!(
        log.matches("worker pod gone; failing over at once").count() - gone_before >= samples,
        "operator log {}",
        operator.log.display()
    );

    // every stored message answered exactly once, through the drains and the deletions
    stop.store(true, Ordering::Relaxed);
    let accepted = load.await?;
    let topic = format!("{prefix}chat.messages");
    wait_for("a reply to every stored message", SETTLE, || async {
        let tally = Tally::of(&read_topic(&bootstrap, &topic).await.ok()?);
        (tally.replies.len() >= tally.sent()).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let any second copy surface
    let tally = Tally::of(&read_topic(&bootstrap, &topic).await?);
    let ids: Vec<String> = tally.users.values().flatten().cloned().collect();
    let (once, lost, duplicated) = tally.outcome(&ids);
    println!(
        "{accepted} sends accepted; {} messages stored: replied once {once}, lost {lost}, duplicated {duplicated}",
        ids.len()
    );
    assert!(ids.len() >= accepted && accepted > 100, "{accepted} accepted");
    assert_eq!((once, lost, duplicated), (ids.len(), 0, 0));
    operator.kill().await?;
    Ok(())
}
