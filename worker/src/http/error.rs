//! One error type for every handler; each variant maps to a status and a JSON body.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::validate::FieldError;

/// A handler failure, shown to clients as `{"error", "message", "field"?}`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input, naming the field.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Unknown conversation or route.
    #[error("{0}")]
    NotFound(String),
    /// A dependency (Kafka) is unavailable, or the worker is draining.
    #[error("{0}")]
    Unavailable(String),
    /// The capability is not available in this configuration.
    #[error("{0}")]
    NotImplemented(String),
    /// The request conflicts with the mesh's state (draining, dead target, move in flight).
    #[error("{0}")]
    Conflict(String),
    /// No credential, or not a valid one. The answer never says which part was wrong.
    #[error("a valid bearer credential is required")]
    Unauthorized,
    /// A valid credential whose role does not allow the route.
    #[error("this credential's role does not allow this request")]
    Forbidden,
    /// Overloaded (a backlog, not the caller's rate): 503 with `Retry-After`.
    #[error("{message}")]
    Busy {
        /// Why.
        message: String,
        /// When a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// Over a rate limit; retry after the given time.
    #[error("{message}")]
    TooManyRequests {
        /// What was limited.
        message: String,
        /// When a retry can succeed.
        retry_after: std::time::Duration,
    },
}

impl From<crate::limits::Limited> for AppError {
    fn from(l: crate::limits::Limited) -> Self {
        AppError::TooManyRequests {
            message: l.what,
            retry_after: l.retry_after,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            AppError::Field(e) => (
                if e.too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                json!({
                    "error": if e.too_large { "too_large" } else { "invalid_request" },
                    "field": e.field,
                    "message": format!("{}: {}", e.field, e.message),
                }),
            ),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": "not_found", "message": m})),
            AppError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unavailable", "message": m}),
            ),
            AppError::NotImplemented(m) => (
                StatusCode::NOT_IMPLEMENTED,
                json!({"error": "not_implemented", "message": m}),
            ),
            AppError::Conflict(m) => (StatusCode::CONFLICT, json!({"error": "conflict", "message": m})),
            AppError::Unauthorized => {
                let body = json!({"error": "unauthorized", "message": self.to_string()});
                let challenge = [(header::WWW_AUTHENTICATE, r#"Bearer realm="meshchat""#)];
                return (StatusCode::UNAUTHORIZED, challenge, Json(body)).into_response();
            }
            AppError::Forbidden => (
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "message": self.to_string()}),
            ),
            AppError::Busy { message, retry_after } => {
                let secs = retry_after.as_secs().max(1);
                let body = json!({"error": "unavailable", "message": message, "retryAfterSeconds": secs});
                let header = [(header::RETRY_AFTER, secs.to_string())];
                return (StatusCode::SERVICE_UNAVAILABLE, header, Json(body)).into_response();
            }
            AppError::TooManyRequests { message, retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let body = json!({"error": "rate_limited", "message": message, "retryAfterSeconds": secs});
                let header = [(header::RETRY_AFTER, secs.to_string())];
                return (StatusCode::TOO_MANY_REQUESTS, header, Json(body)).into_response();
            }
        };
        (status, Json(body)).into_response()
    }
}

/// The raw request body, with axum's rejections turned into [`AppError`]s.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(BytesRejection::FailedToBufferBody(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(FieldError {
                    too_large: true,
                    ..FieldError::new("body", "request body is too large")
                }
                .into())
            }
            Err(e) => Err(FieldError::new("body", e.body_text()).into()),
        }
    }
}
