//! `GET /api/agent/status` and `POST /api/agent/migrate`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::{AppError, Body};
use crate::state::AppState;
use crate::validate::parse_migrate;

/// This worker's health and load.
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let s = &state.0;
    let status = if s.draining.load(Ordering::Relaxed) {
        "draining"
    } else if !s.kafka_ok.load(Ordering::Relaxed) {
        "degraded"
    } else if !s.caught_up.load(Ordering::Relaxed) {
        "starting"
    } else {
        "healthy"
    };
    let (active, resident) = {
        let store = s.store.read().unwrap_or_else(|p| p.into_inner());
        let active = store
            .iter()
            .filter(|c| !c.pending.is_empty() || c.in_flight.is_some())
            .count();
        (active, store.len())
    };
    let view = s.ownership.view();
    let uptime = s.started.elapsed().as_secs();
    Json(json!({
        "nodeId": s.config.node_id,
        "status": status,
        "loadFactor": round3(s.load.load_factor()),
        "activeConversations": active,
        "residentConversations": resident,
        "messagesPerSecond": round3(s.load.messages_per_second()),
        "uptime": human(uptime),
        "uptimeSeconds": uptime,
        "ownedPartitions": view.owned.keys().collect::<Vec<_>>(),
        "epochs": view.owned,
        "generation": view.generation,
        "inFlight": s.load.in_flight.load(Ordering::Relaxed),
        "queued": s.load.queued.load(Ordering::Relaxed),
        "concurrencyLimit": s.load.limit,
        "draining": s.draining.load(Ordering::Relaxed),
    }))
}

/// Validates the request, then refuses honestly: ownership is static in this build.
pub async fn migrate(State(state): State<AppState>, Body(body): Body) -> Result<Json<Value>, AppError> {
    let req = parse_migrate(&body)?;
    Err(AppError::NotImplemented(format!(
        "Migration to {:?} is not implemented yet: this worker's partitions {:?} are assigned \
         statically (--owned-partitions). Planned migration arrives with the balancer.",
        req.target_node,
        state.0.ownership.owned()
    )))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `2h 30m` as in the seed's status.
fn human(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptime_reads_like_the_seed() {
        assert_eq!(super::human(9000), "2h 30m");
        assert_eq!(super::human(42), "42s");
        assert_eq!(super::human(90_000), "1d 1h");
    }
}
