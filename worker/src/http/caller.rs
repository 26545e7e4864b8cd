//! Who calls a public route: the [`Caller`] extractor authenticates `Authorization: Bearer`;
//! [`LiveCaller`] (WebSocket and SSE) also takes a ticket from `?ticket=` or the token from
//! `Sec-WebSocket-Protocol`, since browsers cannot set headers on either. Long-lived
//! credentials are never read from the URL.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::ChatService;
use super::error::AppError;
use crate::auth::{AuthError, Identity, Role};

/// The WebSocket subprotocol a browser offers (with `meshchat.bearer.<token>` beside it) to
/// authenticate without a header; the server answers with this one.
pub const WS_PROTOCOL: &str = "meshchat";
const WS_BEARER_PREFIX: &str = "meshchat.bearer.";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who it is.
    pub who: Identity,
    /// The worker runs with `--auth none`: nobody was authenticated, and the body's or query's
    /// `userId` names the sender as before.
    pub anonymous: bool,
}

impl Caller {
    fn anonymous() -> Self {
        Self {
            who: Identity {
                tenant: meshchat_wire::DEFAULT_TENANT.into(),
                user: "anonymous".into(),
                role: Role::Admin,
            },
            anonymous: true,
        }
    }

    /// Refuses a caller whose role does not read or write conversations.
    pub fn chats(&self) -> Result<(), AppError> {
        if self.who.chats() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Refuses a caller that may not see the mesh.
    pub fn sees_mesh(&self) -> Result<(), AppError> {
        if self.who.sees_mesh() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn refused(route: &str, e: AuthError) -> AppError {
    // the reason stays in the worker's log; the client learns only that it was refused
    tracing::debug!(route, reason = %e, "credential refused");
    AppError::Unauthorized
}

impl<S: ChatService> FromRequestParts<Arc<S>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<S>) -> Result<Self, AppError> {
        let auth = s.auth();
        if auth.disabled() {
            return Ok(Caller::anonymous());
        }
        let token = bearer(&parts.headers).ok_or(AppError::Unauthorized)?;
        let who = auth
            .bearer(token)
            .await
            .map_err(|e| refused(parts.uri.path(), e))?;
        Ok(Caller {
            who,
            anonymous: false,
        })
    }
}

/// The caller of a live stream.
#[derive(Clone, Debug)]
pub struct LiveCaller {
    /// Who it is.
    pub caller: Caller,
    /// It authenticated through `Sec-WebSocket-Protocol`, which the answer must then name.
    pub via_protocol: bool,
}

impl<S: ChatService> FromRequestParts<Arc<S>> for LiveCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<S>) -> Result<Self, AppError> {
        let auth = s.auth();
        if auth.disabled() {
            return Ok(LiveCaller {
                caller: Caller::anonymous(),
                via_protocol: false,
            });
        }
        let route = parts.uri.path().to_string();
        let done = |who, via_protocol| LiveCaller {
            caller: Caller {
                who,
                anonymous: false,
            },
            via_protocol,
        };
        if let Some(token) = bearer(&parts.headers) {
            let who = auth.bearer(token).await.map_err(|e| refused(&route, e))?;
            return Ok(done(who, false));
        }
        if let Some(token) = protocol_token(&parts.headers) {
            let who = auth.bearer(&token).await.map_err(|e| refused(&route, e))?;
            return Ok(done(who, true));
        }
        let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .unwrap_or_default();
        match query.get("ticket") {
            Some(ticket) => {
                let who = auth.ticket(ticket).map_err(|e| refused(&route, e))?;
                Ok(done(who, false))
            }
            None => Err(AppError::Unauthorized),
        }
    }
}

/// `Sec-WebSocket-Protocol: meshchat, meshchat.bearer.<token>` → the token.
fn protocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_BEARER_PREFIX).map(str::to_string))
}
