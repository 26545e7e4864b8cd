//! The HTTP API, on two listeners: the public one (REST, WebSocket and SSE, for clients) and
//! the internal one (probes, metrics, the drain and peers' forwarded reads, for the mesh and the
//! kubelet only). Handlers depend only on [`ChatService`], so they are tested without Kafka
//! (`http/tests.rs`).

mod agent;
mod caller;
mod chat;
mod cors;
mod error;
mod feed;
mod health;
mod internal;
mod list;
mod observe;
mod openai;
pub(crate) mod openapi;
mod service;
mod stream;
mod ticket;
mod traced;
mod web;

pub use agent::AUTH_NONE_WARNING;
pub use error::AppError;
pub use service::{
    ChatService, Forwarded, HttpSettings, IndexLoading, Local, Membership, MeshView, Readiness, WorkerStatus,
};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use meshchat_wire::worker::paths;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Header naming the worker that forwarded a read (for the owner's logs; the internal route it
/// goes to never forwards again, and the public routes ignore it).
pub const FORWARDED: &str = "x-meshchat-forwarded-by";

/// The public router over `service`: what clients call. Every route authenticates its caller
/// (the handlers take a [`Caller`]) and scopes what it touches to the caller's tenant.
pub fn app<S: ChatService>(service: Arc<S>) -> Router {
    let body_limit = service.settings().max_content_bytes * 2 + 16 * 1024;
    let api = Router::new()
        .route("/api/chat/send", post(chat::send::<S>))
        .route("/api/chat/conversations", get(list::conversations::<S>))
        .route(
            "/api/chat/conversation/{id}",
            get(chat::conversation::<S>).delete(chat::delete::<S>),
        )
        .route(
            "/api/chat/conversation/{id}/participants",
            post(chat::add_participant::<S>),
        )
        .route("/api/chat/conversation/{id}/cancel", post(chat::cancel::<S>))
        .route("/api/agent/status", get(agent::status::<S>))
        .route("/api/agent/migrate", post(agent::migrate::<S>))
        .route("/api/mesh", get(agent::mesh::<S>))
        .route("/api/endpoints", get(agent::endpoints::<S>))
        .route("/api/auth/ticket", post(ticket::issue::<S>))
        .route("/v1/models", get(openai::models::<S>))
        .route("/v1/models/{model}", get(openai::model_by_id::<S>))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ))
        // a bounded number of requests at once; beyond, a fast 503 rather than a queue that
        // grows with the flood (live streams have their own caps)
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    AppError::Unavailable(
                        "this worker is serving as many requests as it may; retry shortly".into(),
                    )
                }))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::ConcurrencyLimitLayer::new(
                    service.limits().settings().max_requests,
                )),
        );
    let live = Router::new()
        .route(
            "/api/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi::DOCUMENT.as_str(),
                )
            }),
        )
        .route("/api/chat/ws", get(stream::websocket::<S>))
        .route("/api/chat/conversation/{id}/events", get(stream::sse::<S>))
        // waits for the LLM's answer (bounded by its own wait, not the 30 s request timeout);
        // counted as a live stream
        .route("/v1/chat/completions", post(openai::completions::<S>));
    // the web pages: public, embedded
    let pages = Router::new()
        .route("/", get(web::chat_page::<S>))
        .route("/mesh", get(web::mesh_page::<S>))
        .route("/assets/{*path}", get(web::asset));
    api.merge(live)
        .merge(pages)
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            observe::count::<S>,
        ))
        .layer(axum::middleware::from_fn(traced::span))
        .layer(cors::layer(service.clone()))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

/// The internal router over `service`: what only the mesh and the kubelet call. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the drain accepts loopback callers.
pub fn internal_app<S: ChatService>(service: Arc<S>) -> Router {
    Router::new()
        .route(paths::LIVENESS, get(health::healthz))
        .route(paths::READINESS, get(health::readyz::<S>))
        .route(paths::METRICS, get(health::metrics::<S>))
        .route(
            paths::DRAIN,
            get(internal::drain::<S>)
                .post(internal::drain::<S>)
                .delete(internal::undo_drain::<S>),
        )
        .route(
            &format!("{}/{{*key}}", paths::FORWARDED_READ),
            get(internal::forwarded_read::<S>),
        )
        .route(
            &format!("{}/{{*key}}", paths::MEMBERSHIP),
            get(internal::membership::<S>),
        )
        .route(
            &format!("{}/{{*key}}", paths::LIVE_RELAY),
            get(internal::live::<S>),
        )
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

#[cfg(test)]
mod tests;
