//! Live-stream tickets: what a browser puts in a WebSocket or EventSource URL instead of its
//! long-lived credential (browsers cannot set headers on either). A ticket is an HS256 JWT of
//! [`TICKET_TTL`] signed with a key derived from the mesh secret, so every worker of the mesh
//! accepts the tickets any of them issued; its audience keeps it from being a bearer token
//! anywhere else.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, Identity, Role};

/// How long a ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
const AUDIENCE: &str = "meshchat-live";
const ISSUER: &str = "meshchat";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    tnt: String,
    sub: String,
    role: Role,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Issues and verifies tickets.
#[derive(Clone)]
pub struct Tickets {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tickets {
    /// Tickets keyed from `secret` (the mesh secret); without one, from random bytes, so only
    /// this worker accepts its tickets.
    pub fn new(secret: Option<&str>) -> Result<Self, AuthError> {
        let material = match secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let mut random = [0u8; 32];
                getrandom::fill(&mut random).map_err(|e| AuthError::Config {
                    what: "ticket key".into(),
                    reason: e.to_string(),
                })?;
                random.to_vec()
            }
        };
        // a key of its own: a ticket can never pass for the mesh secret or the reverse
        let mut h = Sha256::new();
        h.update(b"meshchat live ticket v1\0");
        h.update(&material);
        let key = h.finalize();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
        })
    }

    /// A ticket for `who`, and its lifetime in seconds.
    pub fn issue(&self, who: &Identity) -> Result<(String, u64), AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        let ttl = TICKET_TTL.as_secs();
        let claims = Claims {
            tnt: who.tenant.clone(),
            sub: who.user.clone(),
            role: who.role,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + ttl,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok((token, ttl))
    }

    /// The identity a valid ticket was issued to.
    pub fn verify(&self, ticket: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(ticket, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(format!("ticket: {e}")))?;
        Ok(Identity {
            tenant: data.claims.tnt,
            user: data.claims.sub,
            role: data.claims.role,
        })
    }
}
