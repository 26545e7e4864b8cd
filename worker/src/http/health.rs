//! Liveness, readiness and metrics.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: Kafka answers and owned partitions are caught up.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let s = &state.0;
    let checks = json!({
        "kafka": s.kafka_ok.load(Ordering::Relaxed),
        "caughtUp": s.caught_up.load(Ordering::Relaxed),
        "live": s.live_ready.load(Ordering::Relaxed),
        "draining": s.draining.load(Ordering::Relaxed),
    });
    let status = if s.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": s.ready(), "checks": checks})))
}

/// `GET|POST /drain`: the kubelet's preStop hook (which can only GET). Starts draining and
/// answers once every partition is handed over, or the drain timeout passed; SIGTERM then finds
/// nothing left to move.
pub async fn drain(State(state): State<AppState>) -> impl IntoResponse {
    let outcome = crate::drain::drain(&state.0).await;
    let held = state.0.held.snapshot().len();
    Json(json!({"drained": outcome.as_str(), "partitionsHeld": held}))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &state.0.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
