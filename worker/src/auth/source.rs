//! Key material that can change while the worker runs: a file (a Kubernetes Secret mounted as a
//! volume is replaced atomically by the kubelet) re-read when its bytes change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AuthError;

/// How often a watched file is looked at. Reading a small file once a second costs nothing,
/// and comparing bytes (not mtimes) catches every kind of replacement.
pub const POLL: Duration = Duration::from_secs(1);

/// Parsed material behind a lock readers only hold for a clone of the `Arc`.
pub struct Shared<T>(RwLock<Arc<T>>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

/// Reads `path`, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError::Config {
        what: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Re-reads `path` every [`POLL`] until `stop`, and hands new contents to `apply`. A file that
/// cannot be read or parsed is logged and the previous material stays in force.
pub fn watch<F>(path: PathBuf, first: Vec<u8>, stop: CancellationToken, what: &'static str, apply: F)
where
    F: Fn(&[u8]) -> Result<usize, AuthError> + Send + 'static,
{
    tokio::spawn(async move {
        let mut last = first;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "{what}: cannot read; keeping the loaded ones");
                    continue;
                }
            };
            if bytes == last {
                continue;
            }
            match apply(&bytes) {
                Ok(n) => tracing::info!(file = %path.display(), count = n, "{what} reloaded"),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "{what}: bad file; keeping the loaded ones")
                }
            }
            last = bytes;
        }
    });
}
