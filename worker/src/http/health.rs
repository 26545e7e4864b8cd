//! Liveness, readiness and metrics (internal listener).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::ChatService;

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: Kafka answers, owned partitions are caught up, the fan-out is assigned, and
/// the worker is not draining.
pub async fn readyz<S: ChatService>(State(s): State<Arc<S>>) -> impl IntoResponse {
    let r = s.readiness();
    let checks = json!({
        "kafka": r.kafka,
        "caughtUp": r.caught_up,
        "live": r.live,
        "draining": r.draining,
    });
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": r.ready(), "checks": checks})))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics<S: ChatService>(State(s): State<Arc<S>>) -> impl IntoResponse {
    match s.metrics_text() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response(),
    }
}
