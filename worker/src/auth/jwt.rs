//! JWTs from an identity provider: HS256, RS256 or ES256, verified against a JWKS (a file,
//! re-read when it changes, or a URL, refetched periodically and when a token names a key id
//! not seen yet). `iss`, `aud`, `exp` and `nbf` are checked with a small leeway; tenant, user
//! and role come from configurable claims. Keys are parsed once per JWKS, not per request, and
//! a token verified once is remembered (by its SHA-256) until it expires or the keys change:
//! clients send the same token with every request, and an RSA verification costs more than
//! the rest of a send (measured in docs/benchmarks.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::source::{self, Shared};
use super::{AuthError, Identity, Role};
use crate::validate::check_id;

/// Which claims carry the identity. Dotted names reach into objects (`realm.tenant`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimNames {
    /// Tenant claim.
    pub tenant: String,
    /// User claim.
    pub user: String,
    /// Role claim: a string or a list of strings (the highest known role counts; none known
    /// or absent means `user`).
    pub role: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "tenant".into(),
            user: "sub".into(),
            role: "role".into(),
        }
    }
}

/// Where keys come from and what a token must say.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (`https://idp/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Identity claims.
    pub claims: ClaimNames,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// How often a JWKS URL is refetched, and at most how often an unknown key id triggers a
/// refetch.
const URL_REFRESH: Duration = Duration::from_secs(300);
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Verified tokens remembered per worker.
const VERIFIED_CACHE: usize = 100_000;

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies JWTs.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    claims: ClaimNames,
    keys: Shared<Vec<Key>>,
    /// Tokens verified with the current keys: SHA-256 → (identity, `exp`).
    verified: quick_cache::sync::Cache<[u8; 32], (Identity, u64)>,
    leeway: u64,
    validations: HashMap<Algorithm, Validation>,
    url: Option<String>,
    client: reqwest::Client,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];

impl JwtVerifier {
    /// Loads the JWKS and keeps it current until `stop`.
    pub async fn start(settings: JwtSettings, stop: CancellationToken) -> Result<Self, AuthError> {
        let config = |reason: &str| AuthError::Config {
            what: "JWT".into(),
            reason: reason.into(),
        };
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(config("--jwt-issuer and --jwt-audience are required with a JWKS"));
        }
        let (first, file_bytes) = match (&settings.jwks_file, &settings.jwks_url) {
            (Some(path), None) => {
                let bytes = source::read(path)?;
                (
                    parse_jwks(&bytes).map_err(|e| in_what(&path.display().to_string(), e))?,
                    Some(bytes),
                )
            }
            (None, Some(_)) => (Vec::new(), None),
            _ => return Err(config("give exactly one of --jwks-file and --jwks-url")),
        };
        let verifier = Self::with_keys(&settings, first);
        if let (Some(path), Some(bytes)) = (settings.jwks_file.clone(), file_bytes) {
            let inner = verifier.inner.clone();
            source::watch(path, bytes, stop, "JWKS", move |b| {
                let keys = parse_jwks(b)?;
                let n = keys.len();
                inner.replace_keys(keys);
                Ok(n)
            });
        } else if settings.jwks_url.is_some() {
            if let Err(e) = verifier.refetch().await {
                tracing::error!(error = %e, "JWKS URL: first fetch failed; JWTs are refused until it succeeds");
            }
            let v = verifier.clone();
            tokio::spawn(async move {
                loop {
                    let wait = if v.inner.keys.get().is_empty() {
                        UNKNOWN_KID_REFRESH
                    } else {
                        URL_REFRESH
                    };
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    if let Err(e) = v.refetch().await {
                        tracing::warn!(error = %e, "JWKS URL: refetch failed; keeping the loaded keys");
                    }
                }
            });
        }
        Ok(verifier)
    }

    /// A verifier over the keys of `jwks` (tests, tools), without watching anything.
    pub fn from_jwks(settings: &JwtSettings, jwks: &[u8]) -> Result<Self, AuthError> {
        Ok(Self::with_keys(settings, parse_jwks(jwks)?))
    }

    fn with_keys(settings: &JwtSettings, keys: Vec<Key>) -> Self {
        let validations = ALGORITHMS
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = settings.leeway.as_secs();
                v.validate_nbf = true;
                v.set_audience(&[&settings.audience]);
                v.set_issuer(&[&settings.issuer]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (*alg, v)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                claims: settings.claims.clone(),
                keys: Shared::new(keys),
                verified: quick_cache::sync::Cache::new(VERIFIED_CACHE),
                leeway: settings.leeway.as_secs(),
                validations,
                url: settings.jwks_url.clone(),
                client: reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .unwrap_or_default(),
                last_fetch: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The identity a valid token stands for.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((who, exp)) = self.inner.verified.get(&digest) {
            if jsonwebtoken::get_current_timestamp() <= exp.saturating_add(self.inner.leeway) {
                return Ok(who);
            }
            self.inner.verified.remove(&digest);
        }
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        if let Some(kid) = &header.kid
            && !self.has_kid(kid)
        {
            self.refetch_for_unknown_kid().await;
        }
        let keys = self.inner.keys.get();
        let validation = self
            .inner
            .validations
            .get(&header.alg)
            .ok_or_else(|| AuthError::Invalid("algorithm not accepted".into()))?;
        let mut last = AuthError::Invalid("no key matches the token's kid and alg".into());
        for key in keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid))
        {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    let who = identity(&data.claims, &self.inner.claims)?;
                    if let Some(exp) = data.claims.get("exp").and_then(Value::as_u64) {
                        self.inner.verified.insert(digest, (who.clone(), exp));
                    }
                    return Ok(who);
                }
                Err(e) => last = invalid(e),
            }
        }
        Err(last)
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.inner
            .keys
            .get()
            .iter()
            .any(|k| k.kid.as_deref() == Some(kid))
    }

    /// A token names a key we do not have: the provider may have rotated. Refetch, at most
    /// once per [`UNKNOWN_KID_REFRESH`], so junk tokens cannot hammer the provider.
    async fn refetch_for_unknown_kid(&self) {
        if self.inner.url.is_none() {
            return;
        }
        {
            let last = self.inner.last_fetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH) {
                return;
            }
        }
        if let Err(e) = self.refetch().await {
            tracing::warn!(error = %e, "JWKS URL: refetch for an unknown key id failed");
        }
    }

    async fn refetch(&self) -> Result<usize, AuthError> {
        let Some(url) = &self.inner.url else {
            return Ok(0);
        };
        let mut last = self.inner.last_fetch.lock().await;
        *last = Some(Instant::now());
        let fetch = |reason: String| AuthError::Config {
            what: format!("JWKS URL {url}"),
            reason,
        };
        let resp = self
            .inner
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fetch(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fetch(format!("answered {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| fetch(e.to_string()))?;
        let keys = parse_jwks(&bytes)?;
        let n = keys.len();
        self.inner.replace_keys(keys);
        Ok(n)
    }
}

impl Inner {
    /// New key material: tokens verified with the old keys must be verified again (a key the
    /// provider withdrew no longer vouches for anything).
    fn replace_keys(&self, keys: Vec<Key>) {
        self.keys.set(keys);
        self.verified.clear();
    }
}

fn invalid(e: jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Invalid(e.to_string())
}

fn in_what(what: &str, e: AuthError) -> AuthError {
    AuthError::Config {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// The usable keys of a JWKS: HS256 (`oct`), RS256 (`RSA`) and ES256 (`EC` P-256). Others are
/// skipped with a warning; a set with no usable key is an error.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, AuthError> {
    let bad = |reason: String| AuthError::Config {
        what: "JWKS".into(),
        reason,
    };
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let Some(alg) = algorithm_of(jwk) else {
            tracing::warn!(kid = ?jwk.common.key_id, "JWKS: skipping a key that is not HS256, RS256 or ES256");
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {:?}: {e}", jwk.common.key_id)))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(bad("no HS256, RS256 or ES256 key".into()));
    }
    Ok(keys)
}

fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::HS256) if by_type == Algorithm::HS256 => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(_) => None,
    }
}

/// The identity in verified `claims`.
fn identity(claims: &Map<String, Value>, names: &ClaimNames) -> Result<Identity, AuthError> {
    let text = |name: &str| -> Result<String, AuthError> {
        let v = claim(claims, name)
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Invalid(format!("claim {name:?} is missing or not a string")))?;
        check_id(name, v).map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(v.to_string())
    };
    let role = match claim(claims, &names.role) {
        Some(Value::String(s)) => Role::parse(s).unwrap_or(Role::User),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().and_then(Role::parse))
            .max_by_key(|r| match r {
                Role::User => 0,
                Role::Admin => 1,
                Role::Operator => 2,
            })
            .unwrap_or(Role::User),
        _ => Role::User,
    };
    Ok(Identity {
        tenant: text(&names.tenant)?,
        user: text(&names.user)?,
        role,
    })
}

fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}
