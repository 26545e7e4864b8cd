//! The `meshchat-operator` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshchat_wire::worker::LogFormat;

/// MeshChat operator.
#[derive(Parser)]
#[command(name = "meshchat-operator", version)]
struct Cli {
    /// Log lines as text, or one JSON object per line (what log collectors want; the chart's
    /// default).
    #[arg(long, global = true, env = "MESHCHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ChatAgent CustomResourceDefinition as YAML.
    Crd,
    /// Check a ChatAgent manifest without applying it.
    Validate {
        /// Manifest file.
        #[arg(short = 'f', long)]
        file: String,
    },
    /// Run the operator on Kubernetes (in a pod, or with KUBECONFIG): reconcile ChatAgents and
    /// balance their workers; replicas elect a leader through a Lease.
    Run {
        /// Metrics and probes address.
        #[arg(long, env = "MESHCHAT_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Identity in the leader Lease (default: the pod name, else host name and process id).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Namespace of the leader Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// Name of the leader Lease.
        #[arg(long, default_value = "meshchat-operator")]
        lease_name: String,
        /// Seconds the Lease holds without renewal.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
        /// Worker image for ChatAgents that name none.
        #[arg(long, env = "MESHCHAT_WORKER_IMAGE")]
        worker_image: Option<String>,
        /// Manage only the ChatAgents of these namespaces (comma-separated; a namespace-scoped
        /// install whose RBAC covers only them). Default: every namespace.
        #[arg(long, env = "MESHCHAT_WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
    },
    /// Run the balancer for one ChatAgent against Kafka, without Kubernetes.
    Local {
        /// The ChatAgent manifest a user would `kubectl apply`.
        #[arg(short = 'f', long)]
        file: String,
        /// Kafka bootstrap servers (default: the manifest's spec.kafka.bootstrapServers).
        #[arg(long, env = "MESHCHAT_KAFKA_BOOTSTRAP")]
        bootstrap: Option<String>,
        /// The Secrets spec.kafka names (SASL password, CA, client certificate), as Kubernetes
        /// mounts them: DIR/<secret>/<key>.
        #[arg(long, env = "MESHCHAT_SECRETS_DIR")]
        secrets_dir: Option<std::path::PathBuf>,
    },
}

/// How long an exiting process waits for blocking calls still running (Kafka metadata requests
/// time out after 10 s on an unreachable broker).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHCHAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    match cli.command {
        Command::Run {
            listen,
            identity,
            lease_namespace,
            lease_name,
            lease_seconds,
            worker_image,
            namespaces,
        } => {
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let mut settings = meshchat_operator::ChildSettings::default();
            if let Some(image) = worker_image {
                settings.default_image = image;
            }
            let lease = std::time::Duration::from_secs(lease_seconds.max(3));
            let opts = meshchat_operator::Options {
                listen,
                identity,
                lease_namespace,
                lease_name,
                settings,
                timing: meshchat_operator::ElectionTiming {
                    lease,
                    renew_deadline: lease * 2 / 3,
                    retry: (lease / 7).max(std::time::Duration::from_millis(500)),
                },
                namespaces: namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("meshchat-operator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| anyhow::anyhow!("no Kubernetes API (in-cluster or KUBECONFIG): {e}"))?;
                let stop = tokio_util::sync::CancellationToken::new();
                let on_signal = stop.clone();
                tokio::spawn(async move {
                    meshchat_operator::shutdown_signal().await;
                    tracing::info!("stopping: handing the lease over");
                    on_signal.cancel();
                });
                meshchat_operator::operate(client, opts, stop).await
            });
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meshchat-operator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Local {
            file,
            bootstrap,
            secrets_dir,
        } => {
            let agent = match std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| meshchat_operator::parse_manifest(&t).map_err(|e| e.to_string()))
            {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("meshchat-operator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = meshchat_operator::LocalOptions {
                bootstrap,
                secrets_dir,
            };
            let result = runtime.block_on(meshchat_operator::balance_locally(agent, opts));
            // a Kafka call still waiting on an unreachable broker must not hold up the exit
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meshchat-operator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crd => match meshchat_crds::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshchat-operator: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Validate { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("meshchat-operator: cannot read {file}: {e}");
                    return ExitCode::from(2);
                }
            };
            match meshchat_operator::parse_manifest(&text) {
                Ok(agent) => {
                    let name = agent.metadata.name.unwrap_or_default();
                    println!(
                        "{file}: ChatAgent {name:?} is valid ({} replicas)",
                        agent.spec.replicas
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{file}: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
