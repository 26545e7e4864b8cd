//! Cross-origin calls between the mesh's own workers. Under `make run` (and wherever clients
//! reach workers directly) each worker is an origin of its own: a page loaded from one goes on
//! at another when its worker is gone, so every worker allows the origins of the mesh's
//! workers — those it heard heartbeats from — and no other. Credentials are bearer tokens, not
//! cookies, so an allowed origin gains nothing a page could not already send.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ChatService;

/// The layer allowing the mesh's workers' origins.
pub fn layer<S: ChatService>(service: Arc<S>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| service.mesh_origins().iter().any(|a| a == o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static(super::chat::IDEMPOTENCY_KEY),
        ])
        .expose_headers([RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// `scheme://host[:port]` of a base URL, as browsers write an `Origin`.
pub fn origin_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    let default = matches!(
        (scheme.as_str(), authority.port_u16()),
        ("http", Some(80)) | ("https", Some(443))
    );
    Some(match authority.port_u16() {
        Some(port) if !default => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origins_as_browsers_write_them() {
        assert_eq!(
            origin_of("http://127.0.0.1:8081").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8081/").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(
            origin_of("HTTPS://Chat.Example.com:443/x").as_deref(),
            Some("https://chat.example.com")
        );
        assert_eq!(
            origin_of("http://w-1.meshchat.svc:80").as_deref(),
            Some("http://w-1.meshchat.svc")
        );
        assert_eq!(origin_of("127.0.0.1:8081"), None);
        assert_eq!(origin_of(""), None);
    }
}
