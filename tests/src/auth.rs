//! Test credentials: JWTs signed with the test-only keys of `tests/fixtures/auth` (the workers
//! the harness starts trust their JWKS) and API keys from a keys file the harness writes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The `iss` test workers require.
pub const ISSUER: &str = "https://idp.meshchat.test";
/// The `aud` test workers require.
pub const AUDIENCE: &str = "meshchat";

/// API keys the harness's keys file lists: `(tenant, user, role)`; [`api_key`] gives each one's
/// key.
pub const API_KEY_IDENTITIES: [(&str, &str, &str); 8] = [
    ("default", "harness", "admin"),
    ("default", "mesh", "operator"),
    ("acme", "alice", "user"),
    ("acme", "bob", "user"),
    ("acme", "boss", "admin"),
    ("globex", "carol", "user"),
    ("globex", "gadmin", "admin"),
    ("default", "bench", "user"),
];

/// Where the test-only key material is.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth")
}

/// The JWKS file test workers load.
pub fn jwks_file() -> PathBuf {
    fixtures().join("jwks.test-only.json")
}

/// The API key of one of [`API_KEY_IDENTITIES`].
pub fn api_key(tenant: &str, user: &str, role: &str) -> String {
    format!("mck_test_{tenant}_{user}_{role}_k7Qx")
}

/// The keys file test workers load (written once per test process).
pub fn api_keys_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("meshchat-test-keys-{}.json", std::process::id()));
        let keys: Vec<Value> = API_KEY_IDENTITIES
            .iter()
            .map(|(tenant, user, role)| {
                json!({"tenant": tenant, "user": user, "role": role,
                       "sha256": sha256_hex(&api_key(tenant, user, role))})
            })
            .collect();
        let _ = std::fs::write(&path, json!({"keys": keys}).to_string());
        path
    })
    .clone()
}

/// Hex SHA-256, as keys files store keys.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Claims of a valid token for `(tenant, user, role)`, an hour long.
pub fn claims(tenant: &str, user: &str, role: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 5, "exp": now + 3600,
           "tenant": tenant, "sub": user, "role": role})
}

/// `claims` signed with the test key of `alg` (HS256, RS256 or ES256).
pub fn sign(alg: Algorithm, claims: &Value) -> String {
    let read = |name: &str| std::fs::read(fixtures().join(name)).unwrap_or_default();
    let (key, kid) = match alg {
        Algorithm::RS256 => (EncodingKey::from_rsa_pem(&read("rs256.test-only.pem")), "rs-test"),
        Algorithm::ES256 => (EncodingKey::from_ec_pem(&read("es256.test-only.pem")), "es-test"),
        _ => (
            Ok(EncodingKey::from_secret(&read("hs256.test-only.secret"))),
            "hs-test",
        ),
    };
    let Ok(key) = key else {
        return String::new();
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap_or_default()
}

/// A valid HS256 JWT for `(tenant, user, role)` (cached: tests mint many).
pub fn jwt(tenant: &str, user: &str, role: &str) -> String {
    type Minted = HashMap<(String, String, String), String>;
    static CACHE: OnceLock<Mutex<Minted>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let key = (tenant.to_string(), user.to_string(), role.to_string());
    if let Ok(c) = cache.lock()
        && let Some(t) = c.get(&key)
    {
        return t.clone();
    }
    let token = sign(Algorithm::HS256, &claims(tenant, user, role));
    if let Ok(mut c) = cache.lock() {
        c.insert(key, token.clone());
    }
    token
}

/// The default tenant's admin named `user`: sends as `user`, reads every conversation of the
/// tenant. What the harness's helpers use unless a test is about identities.
pub fn admin(user: &str) -> String {
    jwt("default", user, "admin")
}

/// The mesh's operator: `/api/mesh`, migrations of partitions and workers.
pub fn operator() -> String {
    jwt("default", "mesh", "operator")
}

/// `Authorization: Bearer <token>` as default headers for a client.
pub fn headers(token: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        h.insert(reqwest::header::AUTHORIZATION, v);
    }
    h
}
