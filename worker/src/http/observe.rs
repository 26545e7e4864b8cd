//! Counts the public API's responses by route, method and status, and times them to their head
//! (`meshchat_http_requests_total`, `meshchat_http_request_duration_seconds`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::ChatService;
use crate::metrics::{HttpLabel, RouteLabel};

/// The middleware: the route as declared, so ids in paths do not become label values.
pub async fn count<S: ChatService>(State(s): State<Arc<S>>, req: Request, next: Next) -> Response {
    let Some(m) = s.http_metrics() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    m.duration
        .get_or_create(&RouteLabel { route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&HttpLabel {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// A bounded set of label values, whatever a client sends.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}
