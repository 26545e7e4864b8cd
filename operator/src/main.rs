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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
