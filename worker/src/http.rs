//! The HTTP API: REST, WebSocket and SSE, health and metrics.

mod agent;
mod chat;
mod error;
mod health;
mod stream;

pub use error::AppError;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// Header marking a read forwarded by another worker (never forwarded again).
pub const FORWARDED: &str = "x-meshchat-forwarded-by";

/// The router.
pub fn app(state: AppState) -> Router {
    let body_limit = state.0.config.max_content_bytes * 2 + 16 * 1024;
    let api = Router::new()
        .route("/api/chat/send", post(chat::send))
        .route("/api/chat/conversation/{id}", get(chat::conversation))
        .route("/api/agent/status", get(agent::status))
        .route("/api/agent/migrate", post(agent::migrate))
        .route("/api/mesh", get(agent::mesh))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/drain", get(health::drain).post(health::drain))
        .route("/metrics", get(health::metrics))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ));
    let live = Router::new()
        .route("/api/chat/ws", get(stream::websocket))
        .route("/api/chat/conversation/{id}/events", get(stream::sse));
    api.merge(live)
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
