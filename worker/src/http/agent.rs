//! `GET /api/agent/status`, `POST /api/agent/migrate` and `GET /api/mesh`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use meshchat_crds::{MeshEvent, MigrateRequest, SCHEMA_VERSION, encode, partition_for};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::error::{AppError, Body};
use crate::held::Phase;
use crate::state::AppState;
use crate::validate::{FieldError, parse_migrate};

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
    let held = s.held.snapshot();
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
        "ownedPartitions": held.keys().collect::<Vec<_>>(),
        "epochs": held.iter().map(|(p, (e, _))| (p.to_string(), *e)).collect::<std::collections::BTreeMap<_, _>>(),
        "handoffs": held.iter().filter(|(_, (_, ph))| *ph != Phase::Live).map(|(p, _)| *p).collect::<Vec<_>>(),
        "generation": s.ownership.view().generation,
        "ownership": s.config.ownership,
        "inFlight": s.load.in_flight.load(Ordering::Relaxed),
        "queued": s.load.queued.load(Ordering::Relaxed),
        "concurrencyLimit": s.load.limit,
        "draining": s.draining.load(Ordering::Relaxed),
    }))
}

/// Asks the balancer to move partitions: all of this node's, one conversation's, or a list.
pub async fn migrate(State(state): State<AppState>, Body(body): Body) -> Result<Json<Value>, AppError> {
    let s = &state.0;
    let req = parse_migrate(&body)?;
    if !s.config.dynamic() {
        return Err(AppError::NotImplemented(format!(
            "this worker's partitions are assigned statically (--ownership static); migration to {:?} \
             needs the balancer (--ownership dynamic with meshchat-operator)",
            req.target_node
        )));
    }
    if s.draining.load(Ordering::Relaxed) {
        return Err(AppError::Conflict(
            "this node is draining; its partitions are already moving".into(),
        ));
    }
    let target = match s.mesh.live_report(&req.target_node) {
        Some(r) => r,
        None if s
            .mesh
            .reports()
            .iter()
            .any(|(r, _)| r.worker_id == req.target_node) =>
        {
            return Err(AppError::Conflict(format!(
                "targetNode {:?} is not alive (no recent heartbeat)",
                req.target_node
            )));
        }
        None => {
            return Err(FieldError::new("targetNode", format!("unknown node {:?}", req.target_node)).into());
        }
    };
    if target.draining {
        return Err(AppError::Conflict(format!(
            "targetNode {:?} is draining",
            req.target_node
        )));
    }
    let view = s.ownership.view();
    let partitions: Vec<i32> = match (&req.partitions, &req.conversation_id) {
        (Some(ps), _) => {
            if let Some(bad) = ps.iter().find(|p| **p >= s.partitions) {
                return Err(FieldError::new(
                    "partitions",
                    format!("partition {bad} does not exist (0..{})", s.partitions - 1),
                )
                .into());
            }
            ps.iter().copied().collect::<BTreeSet<_>>().into_iter().collect()
        }
        (None, Some(conv)) => vec![partition_for(conv, s.partitions)],
        (None, None) => view.owned.keys().copied().collect(),
    };
    if partitions.is_empty() {
        return Err(AppError::Conflict("this node owns no partitions to move".into()));
    }
    let owners: BTreeSet<String> = partitions
        .iter()
        .filter_map(|p| view.owners.get(p).map(|o| o.node_id.clone()))
        .collect();
    let moving: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| view.owners.get(p).is_some_and(|o| o.node_id != req.target_node))
        .collect();
    if moving.is_empty() {
        return Err(AppError::Conflict(format!(
            "partitions {partitions:?} are already on {:?}",
            req.target_node
        )));
    }
    let busy: Vec<i32> = s
        .held
        .snapshot()
        .into_iter()
        .filter(|(p, (_, ph))| moving.contains(p) && *ph != Phase::Live)
        .map(|(p, _)| p)
        .collect();
    if !busy.is_empty() {
        return Err(AppError::Conflict(format!(
            "a move of partitions {busy:?} is already in flight"
        )));
    }
    let source = if owners.len() == 1 {
        owners.iter().next().cloned().unwrap_or_default()
    } else {
        owners.iter().cloned().collect::<Vec<_>>().join(",")
    };
    let request = MigrateRequest {
        v: SCHEMA_VERSION,
        id: format!("mig-{}", uuid::Uuid::now_v7().simple()),
        source: source.clone(),
        target: req.target_node.clone(),
        partitions: moving.clone(),
        timestamp: OffsetDateTime::now_utc(),
    };
    let bytes = encode(&MeshEvent::MigrateRequest(request.clone()))
        .map_err(|e| AppError::Unavailable(format!("could not encode the request: {e}")))?;
    let p = partition_for("migrate", s.events_partitions);
    tokio::time::timeout(
        Duration::from_secs(10),
        s.producer.send(&s.topics.events, p, "migrate", &bytes),
    )
    .await
    .map_err(|_| AppError::Unavailable("Kafka did not acknowledge the request in time".into()))?
    .map_err(|e| AppError::Unavailable(format!("Kafka did not accept the request: {e}")))?;
    let per = s
        .mesh
        .handoff_estimate()
        .unwrap_or(Duration::from_secs_f64(s.config.handoff_grace_secs));
    Ok(Json(json!({
        "message": "Migration started",
        "requestId": request.id,
        "sourceNode": source,
        "targetNode": req.target_node,
        "partitions": moving,
        "estimatedTime": format!("{}ms", per.as_millis()),
    })))
}

/// The whole mesh as this worker sees it: assignment, workers with load, recent moves.
pub async fn mesh(State(state): State<AppState>) -> Json<Value> {
    let s = &state.0;
    let table = s.mesh.table();
    let workers: Vec<Value> = s
        .mesh
        .reports()
        .into_iter()
        .map(|(r, age)| {
            json!({
                "id": r.worker_id,
                "address": r.address,
                "alive": age <= s.mesh.heartbeat_timeout,
                "lastSeenMs": age.as_millis() as u64,
                "loadFactor": round3(r.load_factor),
                "draining": r.draining,
                "generation": r.generation,
                "partitions": r.partitions.iter().map(|p| json!({
                    "partition": p.partition,
                    "epoch": p.epoch,
                    "messagesPerSecond": round3(p.messages_per_s),
                    "tokensPerSecond": round3(p.tokens_per_s),
                    "inFlight": p.in_flight,
                    "residentConversations": p.resident_conversations,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "agent": s.mesh.agent,
        "ownership": s.config.ownership,
        "generation": table.as_ref().map_or(0, |t| t.generation),
        "partitions": table.as_ref().map(|t| t.partitions.iter().map(|a| json!({
            "partition": a.partition, "owner": a.owner, "epoch": a.epoch,
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "workers": workers,
        "recentMoves": s.mesh.recent_moves(),
    }))
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
