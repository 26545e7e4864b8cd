//! What one caller or tenant may take from this worker: messages and reads per minute
//! (token buckets), live streams at once, and LLM tokens per minute. Over a limit the caller is
//! told when to retry; nothing is queued for it.
//!
//! Limits are kept per worker: a user whose requests reach several workers can get up to that
//! many times the rate (docs/security.md says so).

mod tokens;

pub use tokens::TokenBudget;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// The limits, as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitSettings {
    /// Messages a user may send per minute.
    pub user_messages_per_minute: u32,
    /// Messages a user may send at once before the rate applies.
    pub user_message_burst: u32,
    /// Messages a tenant's users together may send per minute.
    pub tenant_messages_per_minute: u32,
    /// The tenant's burst.
    pub tenant_message_burst: u32,
    /// Reads (conversation views, opening a live stream) a user may make per minute; bursts
    /// of a quarter of it.
    pub user_reads_per_minute: u32,
    /// Live streams (WebSocket, SSE) one user may hold open at once on this worker.
    pub user_streams: u32,
    /// Live streams one tenant may hold open at once on this worker.
    pub tenant_streams: u32,
    /// Live streams this worker serves at once.
    pub worker_streams: u32,
    /// LLM tokens (prompt and completion) a tenant's answers may use per minute.
    pub tenant_llm_tokens_per_minute: u64,
    /// Longest an answer waits for its tenant's token quota before it becomes an error reply.
    pub quota_wait: Duration,
    /// Requests (other than live streams) this worker serves at once; beyond, 503 at once.
    pub max_requests: usize,
    /// Records a conversation's owner may be behind (over all its partitions) before sends to
    /// it are refused (503, retry later): the owner answers at its LLM's pace, and a backlog
    /// beyond this is a mesh that cannot keep up — it would only grow, and with it the
    /// conversations the owner holds waiting for their replies.
    pub max_backlog: i64,
    /// Largest WebSocket message a client may send (clients send nothing the worker needs).
    pub ws_max_message_bytes: usize,
    /// Time between the worker's pings on a WebSocket; a client that answers none of two is
    /// gone (a half-open socket) and the socket is closed.
    pub ws_ping: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            user_messages_per_minute: 120,
            user_message_burst: 100,
            tenant_messages_per_minute: 1200,
            tenant_message_burst: 1000,
            user_reads_per_minute: 1200,
            user_streams: 32,
            tenant_streams: 2000,
            worker_streams: 20_000,
            tenant_llm_tokens_per_minute: 1_000_000,
            quota_wait: Duration::from_secs(10),
            max_requests: 4096,
            max_backlog: 5000,
            ws_max_message_bytes: 64 * 1024,
            ws_ping: Duration::from_secs(20),
        }
    }
}

/// A limit was reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct Limited {
    /// What was limited, in words for the caller.
    pub what: String,
    /// When a retry can succeed.
    pub retry_after: Duration,
}

/// The limiters of one worker.
pub struct Limits {
    settings: LimitSettings,
    user_messages: DefaultKeyedRateLimiter<String>,
    tenant_messages: DefaultKeyedRateLimiter<String>,
    user_reads: DefaultKeyedRateLimiter<String>,
    streams: Mutex<Streams>,
    tokens: Mutex<TokenBudget>,
}

#[derive(Default)]
struct Streams {
    total: u32,
    per_user: HashMap<String, u32>,
    per_tenant: HashMap<String, u32>,
}

/// A live stream's place; given back when dropped.
pub struct StreamPermit {
    limits: Arc<Limits>,
    tenant: String,
    user: String,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// One cell of `limiter` for `key`, or what was limited (`what`, built only then) and when to
/// retry.
fn check(
    limiter: &DefaultKeyedRateLimiter<String>,
    key: String,
    what: impl FnOnce() -> String,
) -> Result<(), Limited> {
    limiter.check_key(&key).map_err(|n| Limited {
        what: what(),
        retry_after: n.wait_time_from(DefaultClock::default().now()),
    })
}

fn user_key(tenant: &str, user: &str) -> String {
    format!("{tenant}\u{1f}{user}")
}

// === impl Limits ===

impl Limits {
    /// Limiters for `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            user_messages: DefaultKeyedRateLimiter::keyed(quota(
                settings.user_messages_per_minute,
                settings.user_message_burst,
            )),
            tenant_messages: DefaultKeyedRateLimiter::keyed(quota(
                settings.tenant_messages_per_minute,
                settings.tenant_message_burst,
            )),
            user_reads: DefaultKeyedRateLimiter::keyed(quota(
                settings.user_reads_per_minute,
                settings.user_reads_per_minute.div_ceil(4),
            )),
            streams: Mutex::new(Streams::default()),
            tokens: Mutex::new(TokenBudget::new(settings.tenant_llm_tokens_per_minute)),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Admits one message of `user` of `tenant`, or says when to retry.
    pub fn admit_message(&self, tenant: &str, user: &str) -> Result<(), Limited> {
        let s = &self.settings;
        check(&self.user_messages, user_key(tenant, user), || {
            format!(
                "too many messages: {} a minute per user",
                s.user_messages_per_minute
            )
        })?;
        check(&self.tenant_messages, tenant.to_string(), || {
            format!(
                "too many messages from tenant {tenant:?}: {} a minute",
                s.tenant_messages_per_minute
            )
        })
    }

    /// Admits one read of `user` of `tenant`, or says when to retry.
    pub fn admit_read(&self, tenant: &str, user: &str) -> Result<(), Limited> {
        check(&self.user_reads, user_key(tenant, user), || {
            format!(
                "too many reads: {} a minute per user",
                self.settings.user_reads_per_minute
            )
        })
    }

    /// A place for one more live stream of `user`, or why not. Streams end when clients go;
    /// the retry hint is a guess.
    pub fn open_stream(self: &Arc<Self>, tenant: &str, user: &str) -> Result<StreamPermit, Limited> {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let key = user_key(tenant, user);
        let (by_user, by_tenant) = (
            s.per_user.get(&key).copied().unwrap_or(0),
            s.per_tenant.get(tenant).copied().unwrap_or(0),
        );
        let refused = if s.total >= self.settings.worker_streams {
            Some("this worker serves as many live streams as it may".to_string())
        } else if by_user >= self.settings.user_streams {
            Some(format!(
                "too many live streams: {} at once per user",
                self.settings.user_streams
            ))
        } else if by_tenant >= self.settings.tenant_streams {
            Some(format!(
                "too many live streams for tenant {tenant:?}: {} at once",
                self.settings.tenant_streams
            ))
        } else {
            None
        };
        if let Some(what) = refused {
            return Err(Limited {
                what,
                retry_after: Duration::from_secs(5),
            });
        }
        s.total += 1;
        *s.per_user.entry(key).or_default() += 1;
        *s.per_tenant.entry(tenant.to_string()).or_default() += 1;
        Ok(StreamPermit {
            limits: self.clone(),
            tenant: tenant.to_string(),
            user: user.to_string(),
        })
    }

    /// Live streams open now.
    pub fn streams_open(&self) -> u32 {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// How long an answer for `tenant` must wait for its token quota (zero: go now).
    pub fn token_wait(&self, tenant: &str) -> Duration {
        let now = tokio::time::Instant::now().into_std();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wait(tenant, now)
    }

    /// Counts `tokens` against `tenant`'s quota.
    pub fn charge_tokens(&self, tenant: &str, tokens: u64) {
        let now = tokio::time::Instant::now().into_std();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .charge(tenant, tokens, now);
    }

    /// Forgets idle keys (callers and tenants not seen for a while), so the limiters' memory
    /// follows the active callers, not every caller ever seen.
    pub fn forget_idle(&self) {
        self.user_messages.retain_recent();
        self.tenant_messages.retain_recent();
        self.user_reads.retain_recent();
        self.user_messages.shrink_to_fit();
        self.tenant_messages.shrink_to_fit();
        self.user_reads.shrink_to_fit();
        let now = tokio::time::Instant::now().into_std();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_full(now);
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut guard = self.limits.streams.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        s.total = s.total.saturating_sub(1);
        let key = user_key(&self.tenant, &self.user);
        for (map, key) in [(&mut s.per_user, key), (&mut s.per_tenant, self.tenant.clone())] {
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
