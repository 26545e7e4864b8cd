//! This worker's load report on `chat.events`, every heartbeat: it is how the balancer knows the
//! worker lives (and what it carries), and each one the broker acknowledges renews the
//! heartbeat lease.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use meshchat_wire::{LoadReport, MeshEvent, PartitionLoad, SCHEMA_VERSION};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::load::{Load, PartitionCounts};
use crate::log::Log;
use crate::ownership::{AssignmentSource, HeartbeatLease, Held, Partition};
use crate::store::Store;

/// What a heartbeat reads.
pub struct Heartbeat {
    /// This worker.
    pub node_id: String,
    /// Its public API's URL.
    pub address: String,
    /// Its internal listener's URL (peers forward reads there).
    pub internal_address: String,
    /// Period.
    pub interval: Duration,
    /// Where it is published.
    pub log: Arc<Log>,
    /// Held partitions (epochs, answers in flight).
    pub held: Held,
    /// Load and per-partition rates.
    pub load: Arc<Load>,
    /// Conversations (resident counts).
    pub store: Arc<RwLock<Store>>,
    /// The assignment (generation applied).
    pub assignments: Arc<AssignmentSource>,
    /// Draining flag.
    pub draining: Arc<AtomicBool>,
    /// Renewed by every acknowledged heartbeat.
    pub lease: Arc<HeartbeatLease>,
}

// === impl Heartbeat ===

impl Heartbeat {
    /// Publishes a load report every interval until `stop`.
    pub async fn beat(self, stop: CancellationToken) {
        let log = self.log.clone();
        let mut last: BTreeMap<Partition, PartitionCounts> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.interval);
        let secs = self.interval.as_secs_f64().max(1e-3);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let event = MeshEvent::LoadReport(self.report(&mut last, secs));
            let (log, key, lease, sent) = (
                log.clone(),
                self.node_id.clone(),
                self.lease.clone(),
                Instant::now(),
            );
            // the lease counts from when an acknowledged heartbeat was sent
            tokio::spawn(async move {
                if log.publish_event(&key, &event).await.is_ok() {
                    lease.renew(sent);
                }
            });
        }
    }

    fn report(&self, last: &mut BTreeMap<Partition, PartitionCounts>, secs: f64) -> LoadReport {
        let counts = self.load.partition_counts();
        let mut resident: BTreeMap<Partition, u32> = BTreeMap::new();
        if let Ok(store) = self.store.read() {
            for c in store.iter() {
                *resident.entry(self.log.partition_of(&c.key)).or_default() += 1;
            }
        }
        let partitions = self
            .held
            .partitions()
            .into_iter()
            .map(|(p, h)| {
                let now = counts.get(&p).copied().unwrap_or_default();
                let prev = last.insert(p, now).unwrap_or_default();
                PartitionLoad {
                    partition: p,
                    epoch: h.epoch,
                    messages_per_s: now.messages.saturating_sub(prev.messages) as f64 / secs,
                    tokens_per_s: now.tokens.saturating_sub(prev.tokens) as f64 / secs,
                    in_flight: h.answers,
                    resident_conversations: resident.get(&p).copied().unwrap_or(0),
                    lag: self.load.lag(p).unwrap_or(0),
                }
            })
            .collect::<Vec<_>>();
        self.load.set_owned(partitions.len());
        LoadReport {
            v: SCHEMA_VERSION,
            worker_id: self.node_id.clone(),
            address: self.address.clone(),
            internal_address: Some(self.internal_address.clone()),
            generation: self.assignments.current().generation,
            partitions,
            load_factor: self.load.load_factor(),
            draining: self.draining.load(Ordering::Relaxed),
            timestamp: OffsetDateTime::now_utc(),
        }
    }
}
