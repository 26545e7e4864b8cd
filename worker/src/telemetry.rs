//! OpenTelemetry tracing, off unless an OTLP endpoint is configured. The worker's spans go to
//! the collector over OTLP/HTTP (protobuf); a trace's context travels with what it caused — in
//! Kafka record headers and in the LLM request, as W3C `traceparent`/`tracestate` — so one trace
//! runs from a send through the owner, its LLM call and the reply to the live delivery, whichever
//! workers those are.
//!
//! The standard `OTEL_*` variables are honoured (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_SDK_DISABLED`).

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use rdkafka::message::{BorrowedHeaders, Header, Headers as _, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether spans are exported: when not, none of the data path's spans are made and no record
/// carries a trace header.
static ON: AtomicBool = AtomicBool::new(false);

/// The W3C header a trace context travels in (checked before anything is parsed).
const TRACEPARENT: &str = "traceparent";

/// Whether traces are exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Where traces go.
#[derive(Clone, Debug)]
pub struct TraceSettings {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is appended), if any.
    pub endpoint: Option<String>,
    /// This worker (the resource's `service.instance.id`).
    pub node_id: String,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// gRPC (and JSON) are not built in.
    #[error(
        "{0}={1:?}: only http/protobuf is supported; point the endpoint at the collector's OTLP/HTTP port (4318)"
    )]
    Protocol(&'static str, String),
    /// A bad endpoint or header.
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The exporting pipeline. Dropping it sends what is still queued (do it off the runtime: the
/// exporter's HTTP client is a blocking one).
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("meshchat-worker: traces not all exported: {e}");
        }
    }
}

/// Starts exporting when an endpoint is configured (`None`: tracing is off).
pub fn start(settings: &TraceSettings) -> Result<Option<(Exporting, SdkTracer)>, TelemetryError> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let signal_endpoint = std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if disabled || (settings.endpoint.is_none() && !signal_endpoint) {
        return Ok(None);
    }
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(p) = std::env::var(var)
            && p.trim() != "http/protobuf"
        {
            return Err(TelemetryError::Protocol(var, p));
        }
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    // the signal's own variable names the whole URL, and wins
    if !signal_endpoint && let Some(base) = &settings.endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.instance.id", settings.node_id.clone()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("meshchat-worker");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("meshchat-worker");
    ON.store(true, Ordering::Relaxed);
    Ok(Some((Exporting { provider }, tracer)))
}

/// A producer span (OpenTelemetry messaging conventions): a record about to be written to
/// `partition` of `topic`. Disabled when tracing is off.
pub fn send_span(topic: &str, partition: i32) -> tracing::Span {
    kafka_span("send", "producer", topic, partition)
}

/// What a consumer span does with its record.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// The owner answers the message.
    Answer,
    /// The fan-out hands the record to live streams.
    LiveDelivery,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Answer => "answer",
            Step::LiveDelivery => "live_delivery",
        }
    }
}

/// A consumer span: the record at `offset` of `partition` of `topic` being acted on (`step`).
/// Disabled when tracing is off.
pub fn process_span(topic: &str, partition: i32, offset: i64, step: Step) -> tracing::Span {
    let span = kafka_span("process", "consumer", topic, partition);
    span.record("messaging.kafka.offset", offset)
        .record("meshchat.step", step.as_str());
    span
}

/// `{operation} {topic}`, of span kind `kind`.
fn kafka_span(operation: &'static str, kind: &'static str, topic: &str, partition: i32) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "kafka",
        otel.name = %format_args!("{operation} {topic}"),
        otel.kind = kind,
        messaging.system = "kafka",
        messaging.operation.type = operation,
        messaging.operation.name = operation,
        messaging.destination.name = %topic,
        messaging.destination.partition.id = %partition,
        messaging.kafka.offset = tracing::field::Empty,
        meshchat.step = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// The live-delivery span of a record that carries a trace (`None` for one that does not, and
/// whenever tracing is off).
pub fn continued(
    topic: &str,
    partition: i32,
    offset: i64,
    headers: Option<&BorrowedHeaders>,
) -> Option<tracing::Span> {
    let parent = from_record(headers)?;
    let span = process_span(topic, partition, offset, Step::LiveDelivery);
    adopt(&span, Some(parent));
    Some(span)
}

/// Notes on a producer span how its write ended; hands the result on.
pub fn sent<E: std::fmt::Display>(span: &tracing::Span, result: Result<i64, E>) -> Result<i64, E> {
    match &result {
        Ok(offset) => span.record("messaging.kafka.offset", offset),
        Err(e) => span
            .record("otel.status_code", "ERROR")
            .record("otel.status_description", tracing::field::display(e)),
    };
    result
}

/// A span's context as Kafka record headers (`None` when tracing is off or the span is not
/// sampled: nothing extra on the wire).
pub fn record_headers(span: &tracing::Span) -> Option<OwnedHeaders> {
    if !enabled() {
        return None;
    }
    let mut out = KafkaInjector(OwnedHeaders::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    (out.0.count() > 0).then_some(out.0)
}

/// The trace context a record carries, if it carries one.
pub fn from_record(headers: Option<&BorrowedHeaders>) -> Option<Context> {
    let headers = headers.filter(|_| enabled())?;
    if !headers.iter().any(|h| h.key == TRACEPARENT) {
        return None;
    }
    valid(TraceContextPropagator::new().extract(&KafkaExtractor(headers)))
}

/// The trace context an HTTP request carries, if it carries one.
pub fn from_http(headers: &HeaderMap) -> Option<Context> {
    if !enabled() || !headers.contains_key(TRACEPARENT) {
        return None;
    }
    valid(TraceContextPropagator::new().extract(&HttpCarrier(headers)))
}

/// `span`'s context as HTTP headers (the LLM request's).
pub fn http_headers(span: &tracing::Span) -> Option<reqwest::header::HeaderMap> {
    if !enabled() {
        return None;
    }
    let mut out = HttpInjector(reqwest::header::HeaderMap::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    (!out.0.is_empty()).then_some(out.0)
}

/// Makes `parent` (from a record or a request) the parent of `span`.
pub fn adopt(span: &tracing::Span, parent: Option<Context>) {
    if let Some(parent) = parent
        && let Err(e) = span.set_parent(parent)
    {
        tracing::debug!(error = %e, "could not continue a trace");
    }
}

fn valid(cx: Context) -> Option<Context> {
    cx.span().span_context().is_valid().then_some(cx)
}

struct KafkaInjector(OwnedHeaders);

impl Injector for KafkaInjector {
    fn set(&mut self, key: &str, value: String) {
        let headers = std::mem::replace(&mut self.0, OwnedHeaders::new());
        self.0 = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
}

struct KafkaExtractor<'a>(&'a BorrowedHeaders);

impl Extractor for KafkaExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

struct HttpCarrier<'a>(&'a HeaderMap);

impl Extractor for HttpCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct HttpInjector(reqwest::header::HeaderMap);

impl Injector for HttpInjector {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests;
