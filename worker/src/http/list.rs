//! `GET /api/chat/conversations?cursor=&limit=`: the caller's conversations, most recent first,
//! from this worker's copy of the conversation index. A user sees the conversations it takes
//! part in; an admin every conversation of its tenant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};

use super::ChatService;
use super::caller::Caller;
use super::error::AppError;
use crate::auth::Role;
use crate::index::ListCursor;
use crate::validate::{FieldError, parse_limit};
use crate::view::ConversationList;

/// Most conversations one page holds, and how many when `limit` is not given.
const PAGE_MAX: usize = 100;
const PAGE_DEFAULT: usize = 20;

/// A page of the caller's conversations.
pub async fn conversations<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConversationList>, AppError> {
    caller.chats()?;
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let limit = parse_limit(query.get("limit").map(String::as_str), PAGE_DEFAULT, PAGE_MAX)?;
    let after = query
        .get("cursor")
        .map(|c| c.parse::<ListCursor>())
        .transpose()
        .map_err(|e| FieldError::new("cursor", e.to_string()))?;
    let who = &caller.who;
    s.limits().admit_read(&who.tenant, &who.user)?;
    let user = (who.role == Role::User).then_some(who.user.as_str());
    let page = s
        .list_conversations(&who.tenant, user, after, limit)
        .map_err(|e| AppError::Busy {
            message: e.to_string(),
            retry_after: Duration::from_secs(1),
        })?;
    Ok(Json(page.into()))
}
