//! `GET /api/agent/status`, `POST /api/agent/migrate`, `GET /api/mesh` and `GET /api/endpoints`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use meshchat_wire::worker::Ownership;
use meshchat_wire::{MigrateRequest, SCHEMA_VERSION, partition_for};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::caller::Caller;
use super::chat::membership_of;
use super::error::{AppError, Body};
use super::{ChatService, Membership};
use crate::auth::Role;
use crate::mesh::{Peer, moves};
use crate::ownership::Phase;
use crate::validate::{FieldError, MigrateBody, parse_migrate};

/// This worker's health and load (any authenticated caller).
pub async fn status<S: ChatService>(State(s): State<Arc<S>>, _caller: Caller) -> Json<Value> {
    let st = s.status();
    let ready = s.readiness();
    let status = if ready.draining {
        "draining"
    } else if !ready.kafka {
        "degraded"
    } else if !ready.caught_up {
        "starting"
    } else {
        "healthy"
    };
    let settings = s.settings();
    Json(json!({
        "nodeId": settings.node_id,
        "status": status,
        "loadFactor": round3(st.load_factor),
        "activeConversations": st.active_conversations,
        "residentConversations": st.resident_conversations,
        "evictedConversations": st.evicted_conversations,
        "messagesPerSecond": round3(st.messages_per_second),
        "uptime": human(st.uptime_secs),
        "uptimeSeconds": st.uptime_secs,
        "ownedPartitions": st.held.keys().collect::<Vec<_>>(),
        "epochs": st.held.iter().map(|(p, h)| (p.to_string(), h.epoch)).collect::<BTreeMap<_, _>>(),
        "handoffs": st.held.iter().filter(|(_, h)| h.phase != Phase::Live).map(|(p, _)| *p).collect::<Vec<_>>(),
        "phases": st.held.iter().map(|(p, h)| (p.to_string(), h.phase.name())).collect::<BTreeMap<_, _>>(),
        "generation": st.generation,
        "ownership": settings.ownership,
        "inFlight": st.in_flight,
        "queued": st.queued,
        "concurrencyLimit": st.concurrency_limit,
        "draining": ready.draining,
        "auth": if s.auth().disabled() { "none" } else { "required" },
        "warnings": if s.auth().disabled() {
            vec![AUTH_NONE_WARNING]
        } else {
            Vec::new()
        },
    }))
}

/// What a worker started with `--auth none` says at start and on its status.
pub const AUTH_NONE_WARNING: &str = "authentication is disabled (--auth none): anyone who reaches \
     this worker reads and writes every conversation as an admin; never run it like this outside \
     development";

/// Asks the balancer to move partitions: all of this node's, one conversation's, or a list.
/// An admin moves its tenant's conversations; only the mesh's operator moves partitions or a
/// whole worker (their conversations belong to every tenant). Rate limited per tenant.
pub async fn migrate<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<Value>, AppError> {
    caller.sees_mesh()?;
    let req = parse_migrate(&body)?;
    let who = &caller.who;
    let conversation_key = match (&req.conversation_id, who.role) {
        (Some(id), _) if req.partitions.is_none() => {
            let key = who.key(id);
            if !caller.anonymous
                && who.role == Role::Admin
                && membership_of(&*s, &key, &who.user).await? == Membership::Missing
            {
                return Err(AppError::NotFound(format!("conversation {id:?} not found")));
            }
            Some(key)
        }
        (_, Role::Admin) if !caller.anonymous => return Err(AppError::Forbidden),
        _ => None,
    };
    let request = plan_migration(&*s, req, conversation_key)?;
    // only requests that would publish count: a refused one moves nothing
    s.admit_migration(&who.tenant)
        .map_err(|retry_after| AppError::TooManyRequests {
            message: format!(
                "too many migrate requests for tenant {:?}; retry later",
                who.tenant
            ),
            retry_after,
        })?;
    s.request_migration(request.clone())
        .await
        .map_err(|e| AppError::Unavailable(format!("Kafka did not accept the request: {e}")))?;
    let per = s.handoff_estimate().unwrap_or(s.settings().handoff_grace);
    Ok(Json(json!({
        "message": "Migration started",
        "requestId": request.id,
        "sourceNode": request.source,
        "targetNode": request.target,
        "partitions": request.partitions,
        "estimatedTime": format!("{}ms", per.as_millis()),
    })))
}

/// The migrate request `req` asks for (`conversation`: the key of the conversation it names,
/// within the caller's tenant), or why it cannot be made.
fn plan_migration<S: ChatService>(
    s: &S,
    req: MigrateBody,
    conversation: Option<String>,
) -> Result<MigrateRequest, AppError> {
    if s.settings().ownership != Ownership::Dynamic {
        return Err(AppError::NotImplemented(format!(
            "this worker's partitions are assigned statically (--ownership static); migration to {:?} \
             needs the balancer (--ownership dynamic with meshchat-operator)",
            req.target_node
        )));
    }
    if s.readiness().draining {
        return Err(AppError::Conflict(
            "this node is draining; its partitions are already moving".into(),
        ));
    }
    let target = match s.peer(&req.target_node) {
        Peer::Alive(r) => r,
        Peer::Silent => {
            return Err(AppError::Conflict(format!(
                "targetNode {:?} is not alive (no recent heartbeat)",
                req.target_node
            )));
        }
        Peer::Unknown => {
            return Err(FieldError::new("targetNode", format!("unknown node {:?}", req.target_node)).into());
        }
    };
    if target.draining {
        return Err(AppError::Conflict(format!(
            "targetNode {:?} is draining",
            req.target_node
        )));
    }
    let assignment = s.assignment();
    let total = s.settings().partitions;
    let partitions: Vec<i32> = match (&req.partitions, &conversation) {
        (Some(ps), _) => {
            if let Some(bad) = ps.iter().find(|p| **p >= total) {
                return Err(FieldError::new(
                    "partitions",
                    format!("partition {bad} does not exist (0..{})", total - 1),
                )
                .into());
            }
            ps.iter().copied().collect::<BTreeSet<_>>().into_iter().collect()
        }
        (None, Some(conv)) => vec![partition_for(conv, total)],
        (None, None) => assignment.owned.keys().copied().collect(),
    };
    if partitions.is_empty() {
        return Err(AppError::Conflict("this node owns no partitions to move".into()));
    }
    let owners: BTreeSet<String> = partitions
        .iter()
        .filter_map(|p| assignment.owners.get(p).map(|o| o.node_id.clone()))
        .collect();
    let moving: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| {
            assignment
                .owners
                .get(p)
                .is_some_and(|o| o.node_id != req.target_node)
        })
        .collect();
    if moving.is_empty() {
        return Err(AppError::Conflict(format!(
            "partitions {partitions:?} are already on {:?}",
            req.target_node
        )));
    }
    let busy: Vec<i32> = s
        .status()
        .held
        .into_iter()
        .filter(|(p, h)| moving.contains(p) && h.phase != Phase::Live)
        .map(|(p, _)| p)
        .collect();
    if !busy.is_empty() {
        return Err(AppError::Conflict(format!(
            "a move of partitions {busy:?} is already in flight"
        )));
    }
    Ok(MigrateRequest {
        v: SCHEMA_VERSION,
        id: format!("mig-{}", uuid::Uuid::now_v7().simple()),
        source: owners.into_iter().collect::<Vec<_>>().join(","),
        target: req.target_node,
        partitions: moving,
        timestamp: OffsetDateTime::now_utc(),
    })
}

/// The mesh's workers that serve clients now, by their public URLs: where a browser page goes
/// on when the worker it talks to is gone. Any signed-in caller (the page has a token whenever
/// it needs the list, so the mesh's addresses are not shown to anonymous callers).
pub async fn endpoints<S: ChatService>(State(s): State<Arc<S>>, _caller: Caller) -> Json<Value> {
    let m = s.mesh();
    let list: Vec<Value> = m
        .reports
        .iter()
        .filter(|(r, age)| *age <= m.heartbeat_timeout && !r.draining)
        .map(|(r, _)| json!({"nodeId": r.worker_id, "url": r.address.trim_end_matches('/')}))
        .collect();
    Json(json!({ "endpoints": list }))
}

/// The whole mesh as this worker sees it: assignment, workers with load, recent moves (admins
/// and the operator).
pub async fn mesh<S: ChatService>(State(s): State<Arc<S>>, caller: Caller) -> Result<Json<Value>, AppError> {
    caller.sees_mesh()?;
    let m = s.mesh();
    let workers: Vec<Value> = m
        .reports
        .iter()
        .map(|(r, age)| {
            let history: Vec<[f64; 3]> = m
                .load_history
                .get(&r.worker_id)
                .map(|h| {
                    h.iter()
                        .map(|x| [x.at_ms as f64, round3(x.load), round3(x.messages_per_s)])
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "id": r.worker_id,
                "address": r.address,
                "alive": *age <= m.heartbeat_timeout,
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
                // [unix ms, load factor, messages/s], one per 5 s over the last 10 minutes
                "history": history,
            })
        })
        .collect();
    Ok(Json(json!({
        "agent": m.agent,
        "ownership": s.settings().ownership,
        "generation": m.table.as_ref().map_or(0, |t| t.generation),
        "partitions": m.table.as_ref().map(|t| t.partitions.iter().map(|a| json!({
            "partition": a.partition, "owner": a.owner, "epoch": a.epoch,
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "heartbeatTimeoutMs": m.heartbeat_timeout.as_millis() as u64,
        "workers": workers,
        "recentMoves": m.recent_moves,
        // the same steps gathered per move, with each move's pause
        "moves": moves::summarize(&m.recent_moves),
        // the balancer's verdict on requests answered "Migration started" that it did not carry out
        "refusedMigrations": m.refused_migrations.iter().map(|e| {
            let (id, why) = e.detail.split_once(": ").unwrap_or(("", e.detail.as_str()));
            json!({"requestId": id, "reason": why, "timestamp": e.timestamp
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()})
        }).collect::<Vec<_>>(),
    })))
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
