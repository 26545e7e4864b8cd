//! The balancers the operator runs, one per ChatAgent, owned by one supervisor. Reconciles
//! declare what each ChatAgent wants ([`Supervisor::want`]) and the controller which ChatAgents
//! still exist ([`Supervisor::retain`]); the supervisor starts, restarts (settings changed, or
//! the balancer failed) and stops the tasks, and asks the controller to reconcile a ChatAgent
//! when its balancer's report changes ([`Supervisor::triggers`]), so status follows the balancer
//! without polling. Only the leader runs one: only it may publish assignment tables.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::channel::mpsc as futures_mpsc;
use kube::runtime::reflector::ObjectRef;
use meshchat_crds::ChatAgent;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::balancer::{self, BalancerSettings, Report};

/// A balancer's load figures change every heartbeat: they trigger a reconcile at most this often
/// (anything else — workers, generation, Kafka — at once).
pub const LOAD_TRIGGER_EVERY: Duration = Duration::from_secs(5);

struct Running {
    settings: BalancerSettings,
    stop: CancellationToken,
    /// Workers Kubernetes reported gone, for the balancer.
    gone: mpsc::UnboundedSender<String>,
    report: watch::Receiver<Report>,
    /// `status.migrations` when it started (its own count starts at 0).
    migrations_base: u64,
}

/// The running balancers, by ChatAgent key (`namespace/name`).
pub struct Supervisor {
    running: Mutex<BTreeMap<String, Running>>,
    triggers: futures_mpsc::UnboundedSender<ObjectRef<ChatAgent>>,
    /// Record settings without starting anything (controller unit tests have no Kafka).
    dry: bool,
}

// === impl Supervisor ===

impl Supervisor {
    /// A supervisor, and the reconcile requests it will make (for `Controller::reconcile_on`).
    pub fn new() -> (Self, futures_mpsc::UnboundedReceiver<ObjectRef<ChatAgent>>) {
        let (triggers, rx) = futures_mpsc::unbounded();
        let s = Self {
            running: Mutex::default(),
            triggers,
            dry: false,
        };
        (s, rx)
    }

    /// One that records what it would run and runs nothing (controller unit tests).
    #[cfg(test)]
    pub fn dry() -> Self {
        let (mut s, _) = Self::new();
        s.dry = true;
        s
    }

    /// The settings of the balancer running for `key`.
    #[cfg(test)]
    pub fn settings(&self, key: &str) -> Option<BalancerSettings> {
        self.lock().get(key).map(|r| r.settings.clone())
    }

    /// ChatAgent `key` wants a balancer with `settings`: starts one unless it runs with exactly
    /// these. Returns its latest report and the migrations base (`migrations_base` is used only
    /// when a balancer starts).
    pub fn want(&self, key: &str, settings: BalancerSettings, migrations_base: u64) -> (Report, u64) {
        let mut running = self.lock();
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
            let (gone, gone_rx) = mpsc::unbounded_channel();
            if !self.dry {
                tokio::spawn(supervise(
                    key.to_string(),
                    settings.clone(),
                    stop.clone(),
                    tx,
                    gone_rx,
                ));
                tokio::spawn(trigger_on_change(
                    object_ref(key),
                    rx.clone(),
                    self.triggers.clone(),
                    stop.clone(),
                ));
            }
            running.insert(
                key.to_string(),
                Running {
                    settings,
                    stop,
                    gone,
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

    /// Kubernetes reports worker `worker` of ChatAgent `key` gone (pod deleted, container
    /// terminated): its balancer fails it over at once. Whether it returns matters only to tests.
    pub fn worker_gone(&self, key: &str, worker: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|r| r.gone.send(worker.to_string()).is_ok())
    }

    /// Stops the balancers of ChatAgents not in `keep`.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        self.lock().retain(|key, r| {
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
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `namespace/name` as a reference to the ChatAgent.
fn object_ref(key: &str) -> ObjectRef<ChatAgent> {
    match key.split_once('/') {
        Some((ns, name)) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(key),
    }
}

/// Runs one ChatAgent's balancer until `stop`; a failed one (Kafka gone mid-run) starts again
/// after a pause.
pub(crate) async fn supervise(
    key: String,
    settings: BalancerSettings,
    stop: CancellationToken,
    report: watch::Sender<Report>,
    mut gone: mpsc::UnboundedReceiver<String>,
) {
    while !stop.is_cancelled() {
        if let Err(e) = balancer::balance(settings.clone(), stop.clone(), report.clone(), &mut gone).await {
            tracing::warn!(agent = %key, error = %e, "balancer failed; restarting");
            report.send_modify(|r| r.kafka_reachable = Some(false));
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}

/// Asks for a reconcile of `agent` whenever its report changes: at once for what the status
/// shows as conditions and counts, at most every [`LOAD_TRIGGER_EVERY`] for load figures.
async fn trigger_on_change(
    agent: ObjectRef<ChatAgent>,
    mut report: watch::Receiver<Report>,
    triggers: futures_mpsc::UnboundedSender<ObjectRef<ChatAgent>>,
    stop: CancellationToken,
) {
    let mut sent = report.borrow().clone();
    let mut last_sent = Instant::now();
    let mut pending = false;
    loop {
        let due = last_sent + LOAD_TRIGGER_EVERY;
        tokio::select! {
            () = stop.cancelled() => return,
            changed = report.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = report.borrow_and_update().clone();
                if now == sent {
                    continue;
                }
                if !same_but_load(&now, &sent) || Instant::now() >= due {
                    if triggers.unbounded_send(agent.clone()).is_err() {
                        return;
                    }
                    (sent, last_sent, pending) = (now, Instant::now(), false);
                } else {
                    pending = true;
                }
            }
            () = tokio::time::sleep_until(due), if pending => {
                if triggers.unbounded_send(agent.clone()).is_err() {
                    return;
                }
                (sent, last_sent, pending) = (report.borrow().clone(), Instant::now(), false);
            }
        }
    }
}

/// Whether two reports differ only in load figures.
fn same_but_load(a: &Report, b: &Report) -> bool {
    let strip = |r: &Report| {
        let mut r = r.clone();
        r.summary.workers.iter_mut().for_each(|w| w.load = 0.0);
        r
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::balancer::WorkerSummary;

    fn report(load: f64, alive: bool) -> Report {
        let mut r = Report::default();
        r.summary.workers.push(WorkerSummary {
            id: "w0".into(),
            partitions: vec![0, 1],
            load,
            alive,
            draining: false,
        });
        r
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_report_triggers_a_reconcile_and_load_alone_at_most_every_few_seconds() {
        let (tx, rx) = watch::channel(report(0.1, true));
        let (triggers, mut requests) = futures_mpsc::unbounded();
        let stop = CancellationToken::new();
        let agent = object_ref("team-a/support");
        assert_eq!(agent.namespace.as_deref(), Some("team-a"));
        tokio::spawn(trigger_on_change(agent.clone(), rx, triggers, stop.clone()));
        tokio::task::yield_now().await;
        // a worker died: at once
        tx.send_replace(report(0.1, false));
        let got = tokio::time::timeout(Duration::from_millis(10), requests.next()).await;
        assert_eq!(got.ok().flatten(), Some(agent.clone()));
        // load only, every second: one request per LOAD_TRIGGER_EVERY, the last value included
        for i in 0..12 {
            tx.send_replace(report(0.2 + f64::from(i) / 100.0, false));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut n = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), requests.next()).await {
            n += 1;
        }
        assert!((2..=3).contains(&n), "{n} requests for 12 s of load changes");
        // an unchanged report asks for nothing
        tx.send_replace(report(0.31, false));
        tokio::time::sleep(LOAD_TRIGGER_EVERY * 2).await;
        tx.send_replace(report(0.31, false));
        tokio::time::sleep(LOAD_TRIGGER_EVERY * 2).await;
        let mut n = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), requests.next()).await {
            n += 1;
        }
        assert!(n <= 1, "{n}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_dry_supervisor_records_settings_and_starts_nothing() {
        let s = Supervisor::dry();
        let settings = BalancerSettings {
            agent: "ns/a".into(),
            bootstrap: "127.0.0.1:9".into(),
            client: Vec::new(),
            topics: meshchat_wire::Topics::with_prefix(""),
            policy: crate::planner::Policy::default(),
            timing: crate::balancer::RoundTiming {
                interval_ms: 30_000,
                heartbeat_timeout_ms: 5_000,
            },
        };
        let (r, base) = s.want("ns/a", settings.clone(), 7);
        assert_eq!((r, base), (Report::default(), 7));
        assert_eq!(s.settings("ns/a"), Some(settings));
        s.retain(&BTreeSet::new());
        assert_eq!(s.running(), 0);
    }
}
