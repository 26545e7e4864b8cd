//! Handoff steps on `chat.events`, for peers (a release lets the new owner go on), dashboards
//! and measurements.

use meshchat_wire::{HandoffEvent, HandoffStep, MeshEvent, SCHEMA_VERSION};
use time::OffsetDateTime;

use super::Owner;
use crate::ownership::Announcement;

// === impl Owner ===

impl Owner {
    /// Publishes a handoff step on chat.events (for peers, dashboards and measurements).
    pub(super) fn announce(&self, a: Announcement) {
        let me = self.settings.node_id.as_str();
        let event = |partition, epoch, from: &str, to: &str, step| HandoffEvent {
            v: SCHEMA_VERSION,
            partition,
            epoch,
            from: from.to_string(),
            to: to.to_string(),
            step,
            committed_offset: None,
            replayed: None,
            timestamp: OffsetDateTime::now_utc(),
        };
        let ev = match a {
            Announcement::Releasing {
                partition,
                to,
                to_epoch,
            } => {
                tracing::info!(partition, to = %to, "releasing");
                event(partition, to_epoch, me, &to, HandoffStep::Releasing)
            }
            Announcement::Released {
                partition,
                to,
                to_epoch,
                committed,
            } => {
                self.metrics.partitions_released.inc();
                tracing::info!(partition, to = %to, committed, "released");
                HandoffEvent {
                    committed_offset: Some(committed),
                    ..event(partition, to_epoch, me, &to, HandoffStep::Released)
                }
            }
            Announcement::Live {
                partition,
                epoch,
                replayed,
                took,
            } => {
                self.mesh.record_handoff(took);
                self.metrics.handoff_pause.observe(took.as_secs_f64());
                tracing::info!(
                    partition,
                    epoch,
                    took_ms = took.as_millis() as u64,
                    "partition live"
                );
                HandoffEvent {
                    replayed: Some(replayed),
                    ..event(partition, epoch, "", me, HandoffStep::Live)
                }
            }
        };
        let key = format!("p{}", ev.partition);
        self.log.publish_event_nowait(&key, &MeshEvent::Handoff(ev));
    }
}
