//! The balancers the operator runs, one per ChatAgent: started when a ChatAgent is reconciled,
//! restarted when its Kafka or policy settings change, stopped when it is gone or when this
//! operator stops leading (only the leader may publish assignment tables).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::balancer::{self, BalancerSettings, Report};

struct Running {
    settings: BalancerSettings,
    stop: CancellationToken,
    report: watch::Receiver<Report>,
    /// `status.migrations` when it started (its own count starts at 0).
    migrations_base: u64,
}

/// The running balancers, by ChatAgent key (`namespace/name`).
#[derive(Default)]
pub struct Balancers {
    running: Mutex<BTreeMap<String, Running>>,
    /// Record settings without starting anything (controller unit tests have no Kafka).
    dry: bool,
}

impl Balancers {
    /// A registry that records what it would run and runs nothing.
    pub fn dry() -> Self {
        Self {
            running: Mutex::default(),
            dry: true,
        }
    }

    /// The settings of the balancer running for `key`.
    pub fn settings(&self, key: &str) -> Option<BalancerSettings> {
        let running = self.running.lock().ok()?;
        running.get(key).map(|r| r.settings.clone())
    }

    /// Makes sure a balancer with `settings` runs for `key`; returns its latest report and the
    /// migrations base. `migrations_base` is used only when a balancer (re)starts.
    pub fn ensure(&self, key: &str, settings: BalancerSettings, migrations_base: u64) -> (Report, u64) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = running
            .get(key)
            .is_none_or(|r| r.settings != settings || r.stop.is_cancelled());
        if fresh {
            if let Some(old) = running.remove(key) {
                tracing::info!(agent = key, "ChatAgent settings changed; restarting its balancer");
                old.stop.cancel();
            }
            let stop = CancellationToken::new();
            let (tx, rx) = watch::channel(Report::default());
            if !self.dry {
                let (s, st, k) = (settings.clone(), stop.clone(), key.to_string());
                tokio::spawn(async move {
                    // a failed balancer (Kafka gone mid-run) starts again after a pause
                    while !st.is_cancelled() {
                        if let Err(e) = balancer::run(s.clone(), st.clone(), tx.clone()).await {
                            tracing::warn!(agent = %k, error = %e, "balancer failed; restarting");
                            tx.send_modify(|r| r.kafka_reachable = Some(false));
                            tokio::select! {
                                () = st.cancelled() => {}
                                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                            }
                        }
                    }
                });
            }
            running.insert(
                key.to_string(),
                Running {
                    settings,
                    stop,
                    report: rx,
                    migrations_base,
                },
            );
        }
        running
            .get(key)
            .map(|r| (r.report.borrow().clone(), r.migrations_base))
            .unwrap_or_default()
    }

    /// Stops the balancers of ChatAgents not in `keep`.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, r| {
            let keep = keep.contains(key);
            if !keep {
                tracing::info!(agent = key, "ChatAgent gone; stopping its balancer");
                r.stop.cancel();
            }
            keep
        });
    }

    /// Stops every balancer (this operator stopped leading, or is exiting).
    pub fn stop_all(&self) {
        self.retain(&BTreeSet::new());
    }

    /// How many run.
    pub fn len(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Balancers {
    fn drop(&mut self) {
        self.stop_all();
    }
}
