//! `Retry-After` from the LLM. async-openai turns a 429 or 503 into an error without its
//! headers, so a tower layer around the HTTP transport reads the header first and leaves it for
//! the attempt that made the request (a task-local: the response to a request is awaited in the
//! task that asked; the streamed body is read elsewhere, but its headers came before).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

tokio::task_local! {
    static ASKED: Cell<Option<Duration>>;
}

/// Runs `attempt`, returning its output and the wait the LLM asked for, if it asked.
pub async fn observed<T>(attempt: impl Future<Output = T>) -> (T, Option<Duration>) {
    ASKED
        .scope(Cell::new(None), async move {
            let out = attempt.await;
            (out, ASKED.with(Cell::get))
        })
        .await
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The layer's service: passes requests on, notes `Retry-After` of refusals.
#[derive(Clone)]
pub struct RetryAfter<S> {
    inner: S,
}

impl<S> RetryAfter<S> {
    /// Wraps the transport.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, R> tower::Service<R> for RetryAfter<S>
where
    S: tower::Service<R, Response = reqwest::Response>,
    S::Future: Send + 'static,
{
    type Response = reqwest::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let status = response.status().as_u16();
            if matches!(status, 429 | 503)
                && let Some(wait) = parse(response.headers(), SystemTime::now())
            {
                // outside an attempt's scope (no one to tell) it is simply not kept
                let _ = ASKED.try_with(|asked| asked.set(Some(wait)));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn seconds_and_dates_are_read_and_nonsense_is_not() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("header"));
            parse(&h, now)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(with(" 0 "), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(with(&later), Some(Duration::from_secs(12)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(with(&earlier), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-3"), None);
        assert_eq!(parse(&HeaderMap::new(), now), None);
    }
}
