//! A tenant's LLM token quota: a bucket holding up to a minute's worth, refilled continuously.
//! Answers are charged what they used after the fact (a completion's length is not known
//! before), so a bucket can go below zero; the next answer then waits until it is positive
//! again. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Token buckets per tenant.
#[derive(Debug)]
pub struct TokenBudget {
    per_minute: u64,
    buckets: HashMap<String, Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens available at `at` (negative: owed).
    level: f64,
    at: Instant,
}

// === impl TokenBudget ===

impl TokenBudget {
    /// Buckets of `per_minute` tokens (0: no quota).
    pub fn new(per_minute: u64) -> Self {
        Self {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    fn rate_per_sec(&self) -> f64 {
        self.per_minute as f64 / 60.0
    }

    fn level(&self, tenant: &str, now: Instant) -> f64 {
        let cap = self.per_minute as f64;
        match self.buckets.get(tenant) {
            None => cap,
            Some(b) => {
                let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate_per_sec();
                (b.level + refill).min(cap)
            }
        }
    }

    /// How long an answer for `tenant` must wait before it may start (zero: now).
    pub fn wait(&self, tenant: &str, now: Instant) -> Duration {
        if self.per_minute == 0 {
            return Duration::ZERO;
        }
        let level = self.level(tenant, now);
        if level > 0.0 {
            Duration::ZERO
        } else {
            // until the bucket holds at least one token again
            Duration::from_secs_f64((1.0 - level) / self.rate_per_sec())
        }
    }

    /// Takes `tokens` from `tenant`'s bucket.
    pub fn charge(&mut self, tenant: &str, tokens: u64, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let level = self.level(tenant, now) - tokens as f64;
        self.buckets.insert(tenant.to_string(), Bucket { level, at: now });
    }

    /// Drops buckets that have refilled (a full bucket is the same as none).
    pub fn forget_full(&mut self, now: Instant) {
        let (cap, rate) = (self.per_minute as f64, self.rate_per_sec());
        self.buckets
            .retain(|_, b| b.level + now.saturating_duration_since(b.at).as_secs_f64() * rate < cap);
    }

    /// Tenants with a bucket not full.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether every bucket is full.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}
