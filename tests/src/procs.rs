//! Real processes: the fake LLM and workers, each killed when its handle drops.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Path of a binary built from this workspace (next to the test executable's directory).
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("MESHCHAT_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // tests live in target/<profile>/deps/, binaries in target/<profile>/
    let mut dir = exe.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// A topic prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A free loopback port.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    free_ports(1)
}

/// The first of `n` consecutive ports free now, below the kernel's ephemeral range: a port the
/// kernel hands out (`bind(0)`) can be taken by any outgoing connection before the process it
/// was chosen for binds it (seen: `make run`'s worker failing with "Address already in use"
/// after its build).
pub fn free_ports(n: u16) -> anyhow::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral.saturating_sub(n));
    anyhow::ensure!(high > low, "no room below the ephemeral ports ({ephemeral})");
    // start somewhere different per process, so concurrent test binaries rarely collide; within
    // a process the ranges follow one another, so ranges handed out before their ports are bound
    // (a test picks all of make run's ports first) never overlap
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        u32::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..4]
                .try_into()
                .unwrap_or_default(),
        )
    });
    let span = u32::from(high - low);
    for _ in 0..500 {
        let k = seed.wrapping_add(NEXT.fetch_add(u32::from(n) + 1, std::sync::atomic::Ordering::Relaxed));
        let base = low + (k % span) as u16;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free ports below {ephemeral}")
}

/// The fake LLM process.
pub struct FakeLlm {
    child: Child,
    /// Base URL (`http://127.0.0.1:port/v1`).
    pub url: String,
}

impl FakeLlm {
    /// Starts it with extra flags (e.g. `--token-latency-ms 5`).
    pub async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin("fake-llm"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting fake-llm (run `cargo build --workspace --bins` first)")?;
        let stdout = child.stdout.take().context("fake-llm stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("fake-llm did not start")??
            .context("fake-llm exited")?;
        let url = line
            .rsplit(' ')
            .next()
            .context("no url in fake-llm banner")?
            .to_string();
        Ok(Self { child, url })
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        let base = self.url.trim_end_matches("/v1");
        Ok(crate::http()
            .get(format!("{base}/stats"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Requests whose last user message carried `[tag:<tag>]`.
    pub async fn calls(&self, tag: &str) -> anyhow::Result<u64> {
        Ok(self.stats().await?["byTag"][tag].as_u64().unwrap_or(0))
    }
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Worker id.
    pub node_id: String,
    /// Topic prefix.
    pub prefix: String,
    /// Kafka bootstrap.
    pub bootstrap: String,
    /// LLM base URL.
    pub llm_url: String,
    /// Public port (fixed once chosen, so restarts keep the address).
    pub port: u16,
    /// Internal listener's port (probes, metrics, the drain, peers' reads).
    pub internal_port: u16,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The command that runs the worker instead of the built binary (a chroot into an image).
    pub launcher: Option<Vec<String>>,
}

impl WorkerSpec {
    /// A worker owning every partition (override with `.env("MESHCHAT_OWNED_PARTITIONS", …)`).
    pub fn new(node_id: &str, prefix: &str, bootstrap: &str, llm_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            node_id: node_id.to_string(),
            prefix: prefix.to_string(),
            bootstrap: bootstrap.to_string(),
            llm_url: llm_url.to_string(),
            port: free_port()?,
            internal_port: free_port()?,
            env: Vec::new(),
            launcher: None,
        })
    }

    /// Runs the worker with `command` (program and arguments) instead of the built binary.
    pub fn launched_by(mut self, command: Vec<String>) -> Self {
        self.launcher = Some(command);
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Base URL the worker will serve its public API on.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Base URL of its internal listener.
    pub fn internal_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.internal_port)
    }
}

/// `--peers` for workers `specs` owning `parts` (one range per worker) statically.
pub fn static_peers(specs: &[WorkerSpec], parts: &[&str]) -> String {
    specs
        .iter()
        .zip(parts)
        .map(|(s, p)| format!("{}={}|{p}", s.node_id, s.internal_url()))
        .collect::<Vec<_>>()
        .join(";")
}

/// Two static workers on the test broker, node-0 owning partitions 0–1 of 4 and node-1 2–3,
/// with their fake LLM (running while this lives).
pub struct StaticPair {
    /// The broker.
    pub bootstrap: String,
    /// Their topics' prefix.
    pub prefix: String,
    /// Their LLM.
    pub llm: FakeLlm,
    /// node-0 and node-1.
    pub workers: Vec<Worker>,
}

/// Starts a [`StaticPair`] for `test`, the workers with `env` too.
pub async fn static_pair(test: &str, env: &[(&str, &str)]) -> anyhow::Result<StaticPair> {
    let bootstrap = crate::kafka::broker().await?;
    let prefix = unique_prefix(test);
    let llm = FakeLlm::start(&[]).await?;
    let env: Vec<(&str, &str)> = [("MESHCHAT_PARTITIONS", "4")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let workers = start_static(&prefix, &bootstrap, &llm.url, &["0-1", "2-3"], &env).await?;
    Ok(StaticPair {
        bootstrap,
        prefix,
        llm,
        workers,
    })
}

/// Starts workers `node-0`, `node-1`, … owning `parts` statically (one range each, peers of
/// each other), each with `env` too.
pub async fn start_static(
    prefix: &str,
    bootstrap: &str,
    llm_url: &str,
    parts: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Vec<Worker>> {
    let specs: Vec<WorkerSpec> = (0..parts.len())
        .map(|i| WorkerSpec::new(&format!("node-{i}"), prefix, bootstrap, llm_url))
        .collect::<anyhow::Result<_>>()?;
    let peers = static_peers(&specs, parts);
    let mut workers = Vec::new();
    for (spec, p) in specs.into_iter().zip(parts) {
        let mut spec = spec
            .env("MESHCHAT_OWNED_PARTITIONS", *p)
            .env("MESHCHAT_PEERS", peers.clone());
        for (k, v) in env {
            spec = spec.env(k, *v);
        }
        workers.push(Worker::start(spec).await?);
    }
    Ok(workers)
}

/// Limits high enough that no scenario meets them.
pub const UNLIMITED: [(&str, &str); 9] = [
    ("MESHCHAT_USER_MESSAGES_PER_MINUTE", "10000000"),
    ("MESHCHAT_USER_MESSAGE_BURST", "1000000"),
    ("MESHCHAT_TENANT_MESSAGES_PER_MINUTE", "10000000"),
    ("MESHCHAT_TENANT_MESSAGE_BURST", "1000000"),
    ("MESHCHAT_USER_READS_PER_MINUTE", "100000000"),
    ("MESHCHAT_USER_STREAMS", "1000000"),
    ("MESHCHAT_TENANT_STREAMS", "1000000"),
    ("MESHCHAT_TENANT_LLM_TOKENS_PER_MINUTE", "0"),
    ("MESHCHAT_MAX_BACKLOG", "1000000000"),
];

/// The mesh secret test workers share.
pub const MESH_SECRET: &str = "test-mesh-secret-0f3c9a";

/// A running worker process.
pub struct Worker {
    child: Option<Child>,
    /// Base URL of the public API.
    pub url: String,
    /// Base URL of the internal listener.
    pub internal_url: String,
    /// How it was started.
    pub spec: WorkerSpec,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Worker {
    /// Starts the worker and waits until `/readyz` answers 200.
    pub async fn start(spec: WorkerSpec) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir()
            .join("meshchat-tests")
            .join(spec.prefix.trim_end_matches('.'));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{}.log", spec.node_id));
        let mut w = Self {
            child: None,
            url: spec.url(),
            internal_url: spec.internal_url(),
            spec,
            log,
        };
        w.spawn().await?;
        Ok(w)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let s = &self.spec;
        let mut command = match s.launcher.as_deref() {
            Some([program, args @ ..]) => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
            _ => Command::new(bin("meshchat-worker")),
        };
        let child = command
            .env("MESHCHAT_NODE_ID", &s.node_id)
            .env("MESHCHAT_LISTEN", format!("127.0.0.1:{}", s.port))
            .env(
                "MESHCHAT_INTERNAL_LISTEN",
                format!("127.0.0.1:{}", s.internal_port),
            )
            .env("MESHCHAT_MESH_SECRET", MESH_SECRET)
            .env("MESHCHAT_JWKS_FILE", crate::auth::jwks_file())
            .env("MESHCHAT_JWT_ISSUER", crate::auth::ISSUER)
            .env("MESHCHAT_JWT_AUDIENCE", crate::auth::AUDIENCE)
            .env("MESHCHAT_API_KEYS_FILE", crate::auth::api_keys_file())
            .env("MESHCHAT_KAFKA_BOOTSTRAP", &s.bootstrap)
            .env("MESHCHAT_TOPIC_PREFIX", &s.prefix)
            .env("MESHCHAT_LLM_BASE_URL", &s.llm_url)
            .env("MESHCHAT_LLM_API_KEY", "test-key")
            .env("MESHCHAT_SNAPSHOT_INTERVAL_SECS", "1")
            .env(
                "MESHCHAT_LOG",
                std::env::var("MESHCHAT_TEST_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into()),
            )
            // scenarios drive load as a handful of users; the limits have their own tests
            // (limits.rs), which set them back
            .envs(UNLIMITED)
            .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting meshchat-worker (run `cargo build --workspace --bins` first)")?;
        self.child = Some(child);
        let ready = crate::wait_for("worker readiness", Duration::from_secs(90), || async {
            let r = crate::http()
                .get(format!("{}/readyz", self.internal_url))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}; worker log {}:\n{}", self.log.display(), self.log_tail());
        }
        Ok(())
    }

    /// `GET /api/agent/status` as the default tenant's admin.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(crate::http()
            .get(format!("{}/api/agent/status", self.url))
            .bearer_auth(crate::auth::admin("harness"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("worker not running")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        let child = self.child.as_mut().context("not running")?;
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .context("worker did not exit after SIGTERM")??;
        self.child = None;
        Ok(status)
    }

    /// SIGKILL, then reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again with the same id, port and settings.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("worker still running");
        }
        self.spawn().await
    }

    /// Runs `meshchat-worker drain [args]` against it, as the kubelet's preStop hook does
    /// inside the pod; returns the command's output (the worker's JSON answer).
    pub async fn drain_command(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = Command::new(bin("meshchat-worker"))
            .arg("drain")
            .args(args)
            .env(
                "MESHCHAT_INTERNAL_LISTEN",
                format!("127.0.0.1:{}", self.spec.internal_port),
            )
            .env_remove("MESHCHAT_MESH_SECRET")
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "meshchat-worker drain failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
