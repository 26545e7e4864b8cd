//! The trace context in the LLM request (W3C `traceparent`): an LLM server that traces (vLLM,
//! an OpenTelemetry-instrumented gateway) files its spans under the answer's trace. Requests are
//! rebuilt per send (async-openai's factory), so the headers are added to each build.

use std::task::{Context, Poll};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;

use crate::telemetry;

/// The layer's service: adds the current span's context to the request.
#[derive(Clone)]
pub struct Propagate<S> {
    inner: S,
}

impl<S> Propagate<S> {
    /// Wraps the transport.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> tower::Service<HttpRequestFactory> for Propagate<S>
where
    S: tower::Service<HttpRequestFactory>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        // called in the attempt's span (the response is awaited there; only the body is read
        // by another task)
        let Some(headers) = telemetry::http_headers(&tracing::Span::current()) else {
            return self.inner.call(request);
        };
        let traced = HttpRequestFactory::new(move || {
            let (request, headers) = (request.clone(), headers.clone());
            async move {
                let mut built = request.build().await?;
                built.headers_mut().extend(headers);
                Ok::<_, OpenAIError>(built)
            }
        });
        self.inner.call(traced)
    }
}
