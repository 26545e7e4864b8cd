//! `POST /api/auth/ticket`: a short-lived ticket for the caller's live streams, for browsers,
//! which cannot set headers on WebSocket or EventSource (`?ticket=` on either).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ChatService;
use super::caller::Caller;
use super::error::AppError;

/// Issues a ticket standing for the caller.
pub async fn issue<S: ChatService>(State(s): State<Arc<S>>, caller: Caller) -> Result<Json<Value>, AppError> {
    let (ticket, ttl) = s
        .auth()
        .issue_ticket(&caller.who)
        .map_err(|e| AppError::Unavailable(format!("could not issue a ticket: {e}")))?;
    Ok(Json(json!({
        "ticket": ticket,
        "expiresIn": ttl,
        "tenant": caller.who.tenant,
        "user": caller.who.user,
        "role": caller.who.role,
    })))
}
