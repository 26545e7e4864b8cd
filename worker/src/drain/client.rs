//! `meshchat-worker drain`: the kubelet's preStop hook. It runs inside the pod and asks the
//! worker's internal listener, on loopback, to drain; the listener accepts a drain only from
//! loopback or with the mesh secret, so nothing outside the pod can take a worker out of service.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use meshchat_wire::worker::{self, env, paths};

/// Drains the worker running in this pod: its partitions are handed over, then it stops being
/// ready. Prints the outcome; a worker already stopped counts as drained.
#[derive(Clone, Debug, Parser)]
#[command(name = "meshchat-worker drain")]
pub struct DrainArgs {
    /// The worker's internal listener (only its port is used: the call goes to loopback).
    #[arg(long, env = "MESHCHAT_INTERNAL_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], worker::INTERNAL_PORT)))]
    pub internal_listen: SocketAddr,
    /// Undo a drain that SIGTERM did not follow instead.
    #[arg(long)]
    pub undo: bool,
    /// Longest wait for the worker's answer, in seconds (the kubelet bounds a preStop hook by
    /// the pod's grace period anyway).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// The mesh secret, when the worker has one (not needed from loopback).
    #[arg(long, env = env::MESH_SECRET, hide_env_values = true)]
    pub mesh_secret: Option<String>,
}

/// Why the drain call failed.
#[derive(Debug, thiserror::Error)]
pub enum DrainCallError {
    /// The worker answered with an error.
    #[error("the worker answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The call failed for another reason than a worker that is gone.
    #[error("could not reach the worker: {0}")]
    Http(#[from] reqwest::Error),
}

/// Calls the worker's `/drain` (or undoes it) and returns its JSON answer.
pub async fn call(args: &DrainArgs) -> Result<String, DrainCallError> {
    let url = format!("http://127.0.0.1:{}{}", args.internal_listen.port(), paths::DRAIN);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;
    let request = if args.undo {
        client.delete(&url)
    } else {
        client.post(&url)
    };
    let request = match &args.mesh_secret {
        Some(secret) => request.bearer_auth(secret),
        None => request,
    };
    let resp = match request.send().await {
        Ok(r) => r,
        // nothing listens: the worker is already gone, which is what a drain wants
        Err(e) if e.is_connect() && !args.undo => {
            return Ok(r#"{"drained":"notRunning"}"#.to_string());
        }
        Err(e) => return Err(e.into()),
    };
    let status = resp.status();
    let body = resp.text().await?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(DrainCallError::Refused {
            status: status.as_u16(),
            body,
        })
    }
}
