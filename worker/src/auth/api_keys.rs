//! API keys: opaque bearer tokens, stored only as SHA-256 hashes in a JSON or YAML file
//!
//! ```yaml
//! keys:
//!   - {id: acme-alice-1, tenant: acme, user: alice, role: user, sha256: 9f86d0…}
//! ```
//!
//! A tenant has as many keys as it likes; rotating is adding the new key, moving clients to
//! it, then removing the old one — each a file change the worker picks up without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::source::{self, Shared};
use super::{AuthError, Identity, Role};
use crate::validate::check_id;

/// One key as the file lists it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A name for logs and rotation (never the key).
    #[serde(default)]
    pub id: Option<String>,
    /// Tenant.
    pub tenant: String,
    /// User.
    pub user: String,
    /// Role.
    pub role: Role,
    /// Hex SHA-256 of the key.
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<ApiKeyEntry>,
}

type Table = HashMap<[u8; 32], Identity>;

/// The loaded keys, by hash.
#[derive(Clone)]
pub struct ApiKeys {
    table: Arc<Shared<Table>>,
}

impl ApiKeys {
    /// Keys from `entries` (tests, tools).
    pub fn from_entries(entries: &[ApiKeyEntry]) -> Result<Self, AuthError> {
        Ok(Self {
            table: Arc::new(Shared::new(table(entries)?)),
        })
    }

    /// Loads `path` and re-reads it whenever its contents change, until `stop`.
    pub fn watch(path: PathBuf, stop: CancellationToken) -> Result<Self, AuthError> {
        let bytes = source::read(&path)?;
        let keys = Self {
            table: Arc::new(Shared::new(parse(&bytes).map_err(|e| in_file(&path, e))?)),
        };
        let shared = keys.table.clone();
        source::watch(path, bytes, stop, "API keys", move |b| {
            let t = parse(b)?;
            let n = t.len();
            shared.set(t);
            Ok(n)
        });
        Ok(keys)
    }

    /// The identity of `token`.
    pub fn lookup(&self, token: &str) -> Result<Identity, AuthError> {
        self.table
            .get()
            .get(&hash_key(token))
            .cloned()
            .ok_or_else(|| AuthError::Invalid("unknown API key".into()))
    }
}

/// The SHA-256 of an API key, as the file stores it (hex) and the table indexes it.
pub fn hash_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// [`hash_key`] in hex, as a keys file lists it.
pub fn hash_key_hex(token: &str) -> String {
    hash_key(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn in_file(path: &std::path::Path, e: AuthError) -> AuthError {
    AuthError::Config {
        what: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn parse(bytes: &[u8]) -> Result<Table, AuthError> {
    let bad = |reason: String| AuthError::Config {
        what: "API keys".into(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
    let file: KeysFile = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?
    };
    table(&file.keys)
}

fn table(entries: &[ApiKeyEntry]) -> Result<Table, AuthError> {
    let mut table = Table::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let bad = |field: &str, reason: String| AuthError::Config {
            what: format!("keys[{i}].{field}"),
            reason,
        };
        check_id("tenant", &e.tenant).map_err(|x| bad("tenant", x.message))?;
        check_id("user", &e.user).map_err(|x| bad("user", x.message))?;
        let hash = from_hex(&e.sha256).ok_or_else(|| {
            bad(
                "sha256",
                "must be 64 hexadecimal characters (the key's SHA-256)".into(),
            )
        })?;
        let who = Identity {
            tenant: e.tenant.clone(),
            user: e.user.clone(),
            role: e.role,
        };
        if table.insert(hash, who).is_some() {
            return Err(bad("sha256", "the same key is listed twice".into()));
        }
    }
    Ok(table)
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
