use opentelemetry::trace::TracerProvider as _;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// The one test that turns tracing on (a process-wide switch).
#[test]
fn a_trace_goes_into_record_headers_and_comes_back_out_only_while_tracing() {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        ON.store(true, Ordering::Relaxed);
        let send = send_span("chat.messages", 3);
        let headers = record_headers(&send).expect("a sampled span's context goes out");
        let sent = send.context().span().span_context().clone();
        let traceparent = headers
            .iter()
            .find(|h| h.key == TRACEPARENT)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("a traceparent header");
        assert_eq!(
            traceparent,
            format!("00-{}-{}-01", sent.trace_id(), sent.span_id()),
            "W3C trace context"
        );

        // the owner's span continues it, as the parent of its own
        let process = continued("chat.messages", 3, 42, Some(headers.as_borrowed())).expect("continued");
        let cx = process.context();
        assert_eq!(cx.span().span_context().trace_id(), sent.trace_id());
        assert_ne!(cx.span().span_context().span_id(), sent.span_id());

        // records without one, or with a broken one, start nothing
        assert!(continued("chat.messages", 3, 43, None).is_none());
        let broken = OwnedHeaders::new().insert(Header {
            key: TRACEPARENT,
            value: Some(b"00-zz-zz-01".as_slice()),
        });
        assert!(from_record(Some(broken.as_borrowed())).is_none());

        // HTTP both ways: the LLM request's headers, a caller's traceparent
        let http = http_headers(&process).expect("headers for the LLM request");
        let mut incoming = HeaderMap::new();
        for (k, v) in &http {
            incoming.insert(k.clone(), v.clone());
        }
        let from_caller = from_http(&incoming).expect("a caller's trace is continued");
        assert_eq!(from_caller.span().span_context().trace_id(), sent.trace_id());

        // off: no headers, no spans, whatever comes in
        ON.store(false, Ordering::Relaxed);
        assert!(send_span("chat.messages", 3).is_disabled());
        assert!(record_headers(&send).is_none());
        assert!(continued("chat.messages", 3, 42, Some(headers.as_borrowed())).is_none());
        assert!(from_http(&incoming).is_none());
    });
}
