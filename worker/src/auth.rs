//! Who is calling. Every public route resolves its caller to an [`Identity`] (tenant, user,
//! role) from a bearer credential: an API key (looked up by its SHA-256, from a file that is
//! re-read when it changes) or a JWT (HS256, RS256 or ES256, keys from a JWKS file or URL).
//! Browsers' live streams present a short-lived ticket instead (`POST /api/auth/ticket`),
//! because they cannot set headers on WebSocket or EventSource.
//!
//! Verification is pure over loaded key material; the file and URL watchers only swap that
//! material in, so a bad file or an unreachable JWKS URL keeps the keys that were working.

mod api_keys;
mod identity;
mod jwt;
mod source;
mod ticket;

pub use api_keys::{ApiKeyEntry, ApiKeys, hash_key, hash_key_hex};
pub use identity::{Identity, Role};
pub use jwt::{ClaimNames, JwtSettings, JwtVerifier};
pub use ticket::{TICKET_TTL, Tickets};

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Why a credential was refused. Clients only ever see "a valid bearer credential is
/// required"; the variant is for the worker's own logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no credential")]
    Missing,
    /// The credential is unknown, malformed, expired, or for another audience or issuer.
    #[error("invalid credential: {0}")]
    Invalid(String),
    /// The key material could not be loaded.
    #[error("{what}: {reason}")]
    Config {
        /// File, URL or setting at fault.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a worker authenticates.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// `--auth none`: no credential is asked for; every caller is an admin of the default
    /// tenant and the sender is the body's `userId`. Development only.
    pub disabled: bool,
    /// API keys file (JSON or YAML, hashes only).
    pub api_keys_file: Option<PathBuf>,
    /// JWT verification, when configured.
    pub jwt: Option<JwtSettings>,
}

/// Resolves credentials to identities.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    disabled: bool,
    api_keys: Option<ApiKeys>,
    jwt: Option<JwtVerifier>,
    tickets: Tickets,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("disabled", &self.inner.disabled)
            .field("api_keys", &self.inner.api_keys.is_some())
            .field("jwt", &self.inner.jwt.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Loads the configured key material; watchers that reload it run until `stop`.
    /// `ticket_secret` signs live-stream tickets: the mesh secret, so any worker accepts a
    /// ticket another issued.
    pub async fn start(
        settings: &AuthSettings,
        ticket_secret: Option<&str>,
        stop: CancellationToken,
    ) -> Result<Self, AuthError> {
        let tickets = Tickets::new(ticket_secret)?;
        if settings.disabled {
            return Ok(Self::from_parts(true, None, None, tickets));
        }
        if settings.api_keys_file.is_none() && settings.jwt.is_none() {
            return Err(AuthError::Config {
                what: "--auth".into(),
                reason: "no credentials are configured: pass --api-keys-file and/or --jwks-file or \
                         --jwks-url (or --auth none, for development only)"
                    .into(),
            });
        }
        let api_keys = match &settings.api_keys_file {
            Some(path) => Some(ApiKeys::watch(path.clone(), stop.clone())?),
            None => None,
        };
        let jwt = match &settings.jwt {
            Some(jwt) => Some(JwtVerifier::start(jwt.clone(), stop).await?),
            None => None,
        };
        Ok(Self::from_parts(false, api_keys, jwt, tickets))
    }

    /// An authenticator over key material already loaded (tests, tools).
    pub fn from_parts(
        disabled: bool,
        api_keys: Option<ApiKeys>,
        jwt: Option<JwtVerifier>,
        tickets: Tickets,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                disabled,
                api_keys,
                jwt,
                tickets,
            }),
        }
    }

    /// Whether this worker runs with `--auth none`.
    pub fn disabled(&self) -> bool {
        self.inner.disabled
    }

    /// The identity behind `Authorization: Bearer <token>`: a JWT when it looks like one and
    /// JWTs are configured, else an API key.
    pub async fn bearer(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(jwt) = &self.inner.jwt
            && looks_like_jwt(token)
        {
            return jwt.verify(token).await;
        }
        match &self.inner.api_keys {
            Some(keys) => keys.lookup(token),
            None => Err(AuthError::Invalid(
                "not a JWT and no API keys are configured".into(),
            )),
        }
    }

    /// The identity behind a live-stream ticket.
    pub fn ticket(&self, ticket: &str) -> Result<Identity, AuthError> {
        self.inner.tickets.verify(ticket)
    }

    /// A ticket for `who`'s live streams, and its lifetime in seconds.
    pub fn issue_ticket(&self, who: &Identity) -> Result<(String, u64), AuthError> {
        self.inner.tickets.issue(who)
    }
}

/// Three base64url segments, the first a JSON header (`eyJ` is `{"`).
fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests;
