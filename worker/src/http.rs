//! The HTTP API: REST, WebSocket and SSE, health and metrics. Handlers depend only on
//! [`ChatService`], so they are tested without Kafka (`http/tests.rs`).

mod agent;
mod chat;
mod error;
mod health;
mod service;
mod stream;

pub use error::AppError;
pub use service::{ChatService, Forwarded, HttpSettings, Local, MeshView, Readiness, WorkerStatus};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use meshchat_wire::worker::paths;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Header marking a read forwarded by another worker (never forwarded again).
pub const FORWARDED: &str = "x-meshchat-forwarded-by";

/// The router over `service`.
pub fn app<S: ChatService>(service: Arc<S>) -> Router {
    let body_limit = service.settings().max_content_bytes * 2 + 16 * 1024;
    let api = Router::new()
        .route("/api/chat/send", post(chat::send::<S>))
        .route("/api/chat/conversation/{id}", get(chat::conversation::<S>))
        .route("/api/agent/status", get(agent::status::<S>))
        .route("/api/agent/migrate", post(agent::migrate::<S>))
        .route("/api/mesh", get(agent::mesh::<S>))
        .route(paths::LIVENESS, get(health::healthz))
        .route(paths::READINESS, get(health::readyz::<S>))
        .route(paths::DRAIN, get(health::drain::<S>).post(health::drain::<S>))
        .route(paths::METRICS, get(health::metrics::<S>))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ));
    let live = Router::new()
        .route("/api/chat/ws", get(stream::websocket::<S>))
        .route("/api/chat/conversation/{id}/events", get(stream::sse::<S>));
    api.merge(live)
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

#[cfg(test)]
mod tests;
