//! A whole dynamic mesh for scenario tests: fake LLM, workers with dynamic ownership, the
//! balancer process, a steady load generator and the exactly-once verification.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{
    FakeLlm, LiveClient, Worker, WorkerSpec, bin, broker, connect_ws, conversation, send, unique_prefix,
    wait_for,
};

/// The balancer process (`meshchat-operator local -f`).
pub struct BalancerProc {
    child: Option<Child>,
    manifest: PathBuf,
    log: PathBuf,
    bootstrap: String,
}

impl BalancerProc {
    async fn spawn(manifest: PathBuf, log: PathBuf, bootstrap: String) -> anyhow::Result<Self> {
        let mut b = Self {
            child: None,
            manifest,
            log,
            bootstrap,
        };
        b.restart().await?;
        Ok(b)
    }

    /// Starts it (again).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin("meshchat-operator"))
            .args(["local", "-f"])
            .arg(&self.manifest)
            .env("MESHCHAT_KAFKA_BOOTSTRAP", &self.bootstrap)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting meshchat-operator")?;
        self.child = Some(child);
        Ok(())
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }
}

/// Settings of a scenario mesh.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Workers to start.
    pub workers: usize,
    /// Partitions.
    pub partitions: i32,
    /// Fake LLM per-token latency.
    pub token_ms: u64,
    /// Fake LLM latency before the first token.
    pub first_token_ms: u64,
    /// LLM concurrency per worker.
    pub concurrency: u32,
    /// Balancer heartbeat timeout.
    pub heartbeat_timeout_secs: u32,
    /// Balancer round interval.
    pub interval_secs: u32,
    /// Cooldown.
    pub cooldown_secs: u32,
    /// A broker of the test's own (`PrivateBroker`) instead of the shared one.
    pub bootstrap: Option<String>,
    /// Extra environment for every worker (after the harness's own, so it overrides them).
    pub worker_env: Vec<(String, String)>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            workers: 3,
            partitions: 12,
            token_ms: 10,
            first_token_ms: 0,
            concurrency: 16,
            heartbeat_timeout_secs: 2,
            interval_secs: 3,
            cooldown_secs: 10,
            bootstrap: None,
            worker_env: Vec::new(),
        }
    }
}

/// A running mesh.
pub struct TestMesh {
    /// Broker.
    pub bootstrap: String,
    /// Topic prefix.
    pub prefix: String,
    /// Agent (table key).
    pub agent: String,
    /// The fake LLM.
    pub llm: FakeLlm,
    /// Workers, by index.
    pub workers: Vec<Worker>,
    /// The balancer.
    pub balancer: BalancerProc,
    opts: MeshOptions,
}

impl TestMesh {
    /// Starts everything and waits until every partition is assigned and live.
    pub async fn start(test: &str, opts: MeshOptions) -> anyhow::Result<Self> {
        let bootstrap = match &opts.bootstrap {
            Some(b) => b.clone(),
            None => broker().await?,
        };
        let prefix = unique_prefix(test);
        let agent = format!("mesh-{test}");
        let llm = FakeLlm::start(&[
            "--token-latency-ms",
            &opts.token_ms.to_string(),
            "--first-token-ms",
            &opts.first_token_ms.to_string(),
        ])
        .await?;
        let dir = std::env::temp_dir()
            .join("meshchat-tests")
            .join(prefix.trim_end_matches('.'));
        std::fs::create_dir_all(&dir)?;
        let manifest = dir.join("chatagent.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: meshchat.io/v1alpha1\nkind: ChatAgent\nmetadata:\n  name: {agent}\nspec:\n  replicas: {}\n  kafka:\n    bootstrapServers: {bootstrap}\n    topicPrefix: \"{prefix}\"\n    partitions: {}\n    replicationFactor: 1\n    minInsyncReplicas: 1\n  rebalance:\n    intervalSeconds: {}\n    heartbeatTimeoutSeconds: {}\n    cooldownSeconds: {}\n  auth:\n    apiKeysSecretRef: {{name: {agent}-api-keys, key: keys.json}}\n",
                opts.workers,
                opts.partitions,
                opts.interval_secs,
                opts.heartbeat_timeout_secs,
                opts.cooldown_secs
            ),
        )?;
        let mut mesh = Self {
            bootstrap: bootstrap.clone(),
            prefix,
            agent,
            llm,
            workers: Vec::new(),
            balancer: BalancerProc {
                child: None,
                manifest: manifest.clone(),
                log: dir.join("balancer.log"),
                bootstrap: bootstrap.clone(),
            },
            opts,
        };
        for i in 0..mesh.opts.workers {
            mesh.add_worker(i).await?;
        }
        mesh.balancer = BalancerProc::spawn(manifest, dir.join("balancer.log"), bootstrap).await?;
        mesh.wait_all_live(Duration::from_secs(60)).await?;
        Ok(mesh)
    }

    /// Starts worker `node-{i}` with dynamic ownership.
    pub async fn add_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let spec = WorkerSpec::new(&format!("node-{i}"), &self.prefix, &self.bootstrap, &self.llm.url)?
            .env("MESHCHAT_OWNERSHIP", "dynamic")
            .env("MESHCHAT_AGENT", &self.agent)
            .env("MESHCHAT_PARTITIONS", self.opts.partitions.to_string())
            .env("MESHCHAT_LLM_CONCURRENCY", self.opts.concurrency.to_string())
            // the heartbeat timeout comes with the balancer's tables
            .env("MESHCHAT_HEARTBEAT_MS", "500")
            .env("MESHCHAT_SHUTDOWN_GRACE_SECS", "5")
            // benches and tests migrate often; the limit has its own test (identity.rs)
            .env("MESHCHAT_MIGRATE_PER_MINUTE", "6000");
        let spec = self
            .opts
            .worker_env
            .iter()
            .fold(spec, |spec, (k, v)| spec.env(k, v.clone()));
        self.workers.push(Worker::start(spec).await?);
        Ok(())
    }

    /// `GET /api/agent/status` of worker `i`.
    pub async fn status(&self, i: usize) -> anyhow::Result<Value> {
        self.workers[i].status().await
    }

    /// Partitions worker `i` holds live (None if it does not answer).
    pub async fn owned(&self, i: usize) -> Option<Vec<i64>> {
        let s = self.status(i).await.ok()?;
        let owned: Vec<i64> = s["ownedPartitions"]
            .as_array()?
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        let handoffs = s["handoffs"].as_array().map_or(0, Vec::len);
        (handoffs == 0).then_some(owned)
    }

    /// Waits until the workers in `among` together hold every partition, each exactly once.
    pub async fn wait_owned_by(
        &self,
        among: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<usize, Vec<i64>>> {
        let n = self.opts.partitions as usize;
        wait_for("partitions held by the expected workers", timeout, || async {
            let mut all = BTreeMap::new();
            let mut count = 0;
            for &i in among {
                let o = self.owned(i).await?;
                count += o.len();
                all.insert(i, o);
            }
            let distinct: std::collections::BTreeSet<i64> = all.values().flatten().copied().collect();
            (count == n && distinct.len() == n).then_some(all)
        })
        .await
    }

    /// Waits until all current workers hold all partitions.
    pub async fn wait_all_live(&self, timeout: Duration) -> anyhow::Result<()> {
        let all: Vec<usize> = (0..self.workers.len()).collect();
        self.wait_owned_by(&all, timeout).await.map(|_| ())
    }
}

/// A steady open-loop sender over many conversations, spreading sends over live workers.
pub struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Sends `rate` messages/s over `conversations` conversations to `urls` (round robin,
    /// skipping a worker that fails), with `hot` of every 10 messages going to conversation 0
    /// and 1 (skew).
    pub fn start(
        urls: Arc<Mutex<Vec<String>>>,
        conversations: usize,
        rate: u32,
        hot: usize,
        tag: &str,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (s, a, tag) = (stop.clone(), accepted.clone(), tag.to_string());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            let mut i = 0usize;
            let mut inflight = tokio::task::JoinSet::new();
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let conv = if i % 10 < hot {
                    format!("{tag}-conv-{}", i % 2)
                } else {
                    format!("{tag}-conv-{}", i % conversations)
                };
                let targets = urls.lock().map(|u| u.clone()).unwrap_or_default();
                let a = a.clone();
                let n = i;
                inflight.spawn(async move {
                    for k in 0..targets.len() {
                        let url = &targets[(n + k) % targets.len()];
                        if let Ok(id) = send(url, &conv, "load", &format!("message {n}")).await {
                            if let Ok(mut v) = a.lock() {
                                v.push((conv.clone(), id));
                            }
                            return;
                        }
                    }
                });
                i += 1;
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Self { stop, accepted, task }
    }

    /// Stops and returns every accepted (conversation, message id).
    pub async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.accepted.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Exactly-once check of what clients see: for every accepted message exactly one reply in
/// GET (through `url`) and on the live clients watching its conversation; replies in the
/// conversation's message order. Prints and returns (sent, replied, lost, duplicated).
pub async fn verify_exactly_once(
    url: &str,
    accepted: &[(String, String)],
    live: &HashMap<String, LiveClient>,
    timeout: Duration,
) -> anyhow::Result<(usize, usize, usize, usize)> {
    let mut by_conv: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (c, id) in accepted {
        by_conv.entry(c.clone()).or_default().push(id.clone());
    }
    let waiting: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let waited = wait_for("a reply to every accepted message", timeout, || async {
        for (conv, ids) in &by_conv {
            let (status, v) = conversation(url, conv).await.ok()?;
            if status != 200 {
                return None;
            }
            let msgs = v["messages"].as_array()?;
            let unanswered: Vec<String> = ids
                .iter()
                .filter(|id| !msgs.iter().any(|m| m["inReplyTo"] == id.as_str()))
                .map(|id| format!("{conv}/{id}"))
                .collect();
            if !unanswered.is_empty() {
                if let Ok(mut w) = waiting.lock() {
                    *w = unanswered;
                }
                return None;
            }
        }
        Some(())
    })
    .await;
    if let Err(e) = waited {
        let w = waiting.lock().map(|w| w.clone()).unwrap_or_default();
        bail!("{e:#}; still unanswered (first conversation found): {w:?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // let late duplicates surface
    let (mut replied, mut lost, mut duplicated) = (0, 0, 0);
    for (conv, ids) in &by_conv {
        let (_, v) = conversation(url, conv).await?;
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        let users: Vec<&str> = msgs
            .iter()
            .filter(|m| m["inReplyTo"].is_null())
            .filter_map(|m| m["id"].as_str())
            .collect();
        let replies: Vec<&str> = msgs.iter().filter_map(|m| m["inReplyTo"].as_str()).collect();
        for id in ids {
            match replies.iter().filter(|r| **r == id.as_str()).count() {
                0 => lost += 1,
                1 => replied += 1,
                _ => duplicated += 1,
            }
        }
        let order: Vec<&str> = users.iter().copied().filter(|u| replies.contains(u)).collect();
        if order != replies {
            bail!("replies of {conv} are not in message order: users {users:?} replies {replies:?}");
        }
        if let Some(client) = live.get(conv) {
            let seen = |id: &str| {
                client
                    .events()
                    .iter()
                    .filter(|e| e["type"] == "reply" && e["message"]["inReplyTo"] == id)
                    .count()
            };
            // live delivery follows the log: a stream that moved to another source (its
            // conversation's owner drained or died) catches up from its last event
            let _ = wait_for("live clients to show every reply", timeout, || async {
                ids.iter().all(|id| seen(id) > 0).then_some(())
            })
            .await;
            for id in ids {
                let n = seen(id);
                if n != 1 {
                    bail!("live client of {conv} saw {n} replies to {id}");
                }
            }
        }
    }
    println!(
        "sent={} replied={replied} lost={lost} duplicated={duplicated}",
        accepted.len()
    );
    Ok((accepted.len(), replied, lost, duplicated))
}

/// Opens a WebSocket on `url` for each of `conversations`.
pub async fn watch_all(url: &str, conversations: &[String]) -> anyhow::Result<HashMap<String, LiveClient>> {
    let mut out = HashMap::new();
    for c in conversations {
        out.insert(c.clone(), connect_ws(url, c).await?);
    }
    Ok(out)
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Scenario meshes run one at a time (each is several processes on a two-core machine).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}
