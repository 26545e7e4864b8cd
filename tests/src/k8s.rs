//! A real Kubernetes control plane for operator tests: kube-apiserver, etcd,
//! kube-controller-manager, kube-scheduler and kwok (Pods become Running and Ready without
//! kubelets), built from the Go module proxy by `tests/k8s/build.sh` and started by
//! `tests/k8s/start-controlplane.sh` on loopback ports of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Child;

use crate::procs::{bin, free_port};

/// The directory of the control plane's binaries, helm, helm-docs and the monitoring and KEDA
/// CRDs (`crds/monitoring`, `crds/keda`), built or fetched the first time by `tests/k8s/build.sh`.
pub async fn tools() -> anyhow::Result<PathBuf> {
    let build = Path::new("k8s")
        .canonicalize()
        .context("tests/k8s")?
        .join("build.sh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash").arg(build).stderr(Stdio::inherit()).output()
    })
    .await??;
    if !out.status.success() {
        bail!("building the control plane failed (see the output above)");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Runs helm from `bin` (with `kubeconfig` for commands that reach a cluster).
pub async fn helm(bin: &Path, args: &[&str], kubeconfig: Option<&Path>) -> anyhow::Result<Output> {
    let mut cmd = tokio::process::Command::new(bin.join("helm"));
    cmd.args(args).stdin(Stdio::null());
    // helm keeps its caches and repositories under HOME: one of its own per test run
    let home = std::env::temp_dir().join("meshchat-tests").join("helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env("KUBECONFIG", "/nonexistent"),
    };
    Ok(cmd.output().await?)
}

/// A running control plane; stopped on drop.
pub struct ControlPlane {
    /// kubeconfig (token auth, CA data) for kubectl and kube-rs.
    pub kubeconfig: PathBuf,
    /// Directory of the binaries (kubectl among them).
    pub bin: PathBuf,
    script: PathBuf,
    env: Vec<(String, String)>,
}

impl ControlPlane {
    /// Builds (first time) and starts a control plane with a fresh etcd under `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let k8s = Path::new("k8s").canonicalize().context("tests/k8s")?;
        let bin = tools().await?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let env = vec![
            ("BIN".to_string(), bin.display().to_string()),
            ("STATE".to_string(), dir.join("state").display().to_string()),
            ("PKI".to_string(), dir.join("pki").display().to_string()),
            ("APISERVER_PORT".to_string(), free_port()?.to_string()),
            ("ETCD_CLIENT_PORT".to_string(), free_port()?.to_string()),
            ("ETCD_PEER_PORT".to_string(), free_port()?.to_string()),
        ];
        let cp = Self {
            kubeconfig: dir.join("pki").join("admin.kubeconfig"),
            bin,
            script: k8s.join("start-controlplane.sh"),
            env,
        };
        let (script, env) = (cp.script.clone(), cp.env.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .envs(env)
                .stderr(Stdio::inherit())
                .output()
        })
        .await??;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "starting the control plane failed; logs in {}",
                dir.join("state/logs").display()
            );
        }
        Ok(cp)
    }

    /// Applies CRD files or directories (server-side, as the docs say) and waits until every
    /// CRD is Established.
    /// Returns the API server's warnings, by file (an apply prints them on stderr).
    pub async fn install_crds(&self, paths: &[&Path]) -> anyhow::Result<Vec<String>> {
        let mut warnings = Vec::new();
        for path in paths {
            let path = path.display().to_string();
            let out = self.kubectl(&["apply", "--server-side", "-f", &path]).await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                bail!("kubectl apply --server-side -f {path}: {stderr}");
            }
            warnings.extend(
                stderr
                    .lines()
                    .filter(|l| l.starts_with("Warning:"))
                    .map(|l| format!("{path}: {l}")),
            );
        }
        self.ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])
        .await?;
        Ok(warnings)
    }

    /// Runs kubectl against this control plane.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_stdin(args, None).await
    }

    /// Runs kubectl with `stdin` (for `apply -f -`).
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut cmd = tokio::process::Command::new(self.bin.join("kubectl"));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("kubectl")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            pipe.write_all(text.as_bytes()).await?;
        }
        Ok(child.wait_with_output().await?)
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args).await?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// A kubeconfig like the admin one but authenticating with `token` (a ServiceAccount's), so
    /// a process using it has exactly that account's RBAC.
    pub fn kubeconfig_with_token(&self, token: &str, path: &Path) -> anyhow::Result<PathBuf> {
        let admin = std::fs::read_to_string(&self.kubeconfig)?;
        let text: Vec<String> = admin
            .lines()
            .map(|l| match l.split_once("token:") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}token: {}", token.trim()),
                _ => l.to_string(),
            })
            .collect();
        if !text.iter().any(|l| l.contains(token.trim())) {
            bail!("no token line in {}", self.kubeconfig.display());
        }
        std::fs::write(path, text.join("\n"))?;
        Ok(path.to_path_buf())
    }

    /// Renders the chart with helm.
    pub async fn helm_template(
        &self,
        release: &str,
        chart: &Path,
        namespace: &str,
    ) -> anyhow::Result<String> {
        self.helm_template_with(release, chart, namespace, &[]).await
    }

    /// Renders the chart with helm and extra arguments (`--set …`).
    pub async fn helm_template_with(
        &self,
        release: &str,
        chart: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(self.bin.join("helm"))
            .args(["template", release])
            .arg(chart)
            .args(["--namespace", namespace])
            .args(extra)
            .output()
            .await?;
        if !out.status.success() {
            bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `kubectl get … -o json`, or None when it does not exist.
    pub async fn get(&self, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"]).await?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("NotFound") || err.contains("not found") {
                return Ok(None);
            }
            bail!("kubectl get {kind} {name}: {err}");
        }
        Ok(Some(serde_json::from_slice(&out.stdout)?))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .envs(self.env.clone())
            .stdout(Stdio::null())
            .status();
    }
}

/// A `meshchat-operator run` process.
pub struct Operator {
    child: Option<Child>,
    /// Its identity in the leader Lease.
    pub identity: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts an operator replica with `kubeconfig`, its Lease in `namespace`.
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(kubeconfig, namespace, identity, dir, &[]).await
    }

    /// Like [`Operator::start`] with extra arguments of `meshchat-operator run`.
    pub async fn start_with(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin("meshchat-operator"))
            .args(["run", "--identity", identity, "--lease-seconds", "6"])
            .args(["--lease-namespace", namespace])
            .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("MESHCHAT_LOG", "info,rdkafka=warn,kube=warn")
            // as the chart runs it
            .env("MESHCHAT_LOG_FORMAT", "json")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting meshchat-operator")?;
        Ok(Self {
            child: Some(child),
            identity: identity.to_string(),
            log,
        })
    }

    /// SIGKILL (no lease hand-over: the other replica must wait the lease out).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }
}
