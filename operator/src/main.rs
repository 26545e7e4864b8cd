//! The `meshchat-operator` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// MeshChat operator.
#[derive(Parser)]
#[command(name = "meshchat-operator", version)]
struct Cli {
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
    /// Run the balancer for one ChatAgent against Kafka, without Kubernetes.
    Local {
        /// The ChatAgent manifest a user would `kubectl apply`.
        #[arg(short = 'f', long)]
        file: String,
        /// Kafka bootstrap servers (default: the manifest's spec.kafka.bootstrapServers).
        #[arg(long, env = "MESHCHAT_KAFKA_BOOTSTRAP")]
        bootstrap: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHCHAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Local { file, bootstrap } => {
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
            let opts = meshchat_operator::balancer::LocalOptions { bootstrap };
            match runtime.block_on(meshchat_operator::balancer::run_local(agent, opts)) {
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
