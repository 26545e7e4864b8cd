//! The `meshchat-worker` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use meshchat_worker::Config;

/// How long an exiting worker waits for work still running on the runtime (a Kafka client
/// closing against a broker that is gone).
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("drain") {
        return drain();
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(meshchat_worker::ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("meshchat-worker: {e}");
            return ExitCode::from(2);
        }
    };
    // built off the runtime: the exporter's HTTP client is a blocking one
    let (exporting, tracer) = match meshchat_worker::telemetry::start(&config.trace_settings()) {
        Ok(t) => t.unzip(),
        Err(e) => {
            eprintln!("meshchat-worker: {e}");
            return ExitCode::from(2);
        }
    };
    meshchat_worker::init_logging(config.log_format, tracer);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshchat-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(meshchat_worker::serve(config));
    runtime.shutdown_timeout(EXIT_WAIT);
    // what the last answers traced goes out before the process ends
    drop(exporting);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("meshchat-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `meshchat-worker drain [--undo]`: the preStop hook (see `meshchat_worker::drain_client`).
fn drain() -> ExitCode {
    use clap::Parser;
    let args = meshchat_worker::drain_client::DrainArgs::parse_from(std::env::args().skip(1));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshchat-worker drain: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meshchat_worker::drain_client::call(&args)) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshchat-worker drain: {e}");
            ExitCode::FAILURE
        }
    }
}
