//! The worker's log output, and the one librdkafka line it also acts on (a partition left
//! without a leader; see wire's `kafka::leaderless`).

use std::fmt::Debug;

use meshchat_wire::kafka::leaderless;
use meshchat_wire::worker::LogFormat;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// The target librdkafka's own log lines arrive under.
const CLIENT_TARGET: &str = "librdkafka";

/// Installs the process's subscriber: `MESHCHAT_LOG` (an `EnvFilter`) chooses what is
/// printed; librdkafka's warnings are looked at whatever it says; with `tracer` (see
/// [`crate::telemetry::start`]) the worker's own spans are exported too.
pub fn init(format: LogFormat, tracer: Option<SdkTracer>) {
    let filter = EnvFilter::try_from_env("MESHCHAT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,tower_http=warn"));
    let printed = match format {
        LogFormat::Json => fmt::layer().json().with_filter(filter).boxed(),
        LogFormat::Text => fmt::layer().with_filter(filter).boxed(),
    };
    let watched = ClientLogWatch.with_filter(Targets::new().with_target(CLIENT_TARGET, Level::WARN));
    // only this crate's spans (and the events inside them) make the trace: not every library's
    let traced = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(Targets::new().with_target(env!("CARGO_CRATE_NAME"), Level::INFO))
    });
    tracing_subscriber::registry()
        .with(printed)
        .with(watched)
        .with(traced)
        .init();
}

/// Hands librdkafka's lines to [`leaderless::note_client_log`].
struct ClientLogWatch;

impl<S: Subscriber> Layer<S> for ClientLogWatch {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = Message(String::new());
        event.record(&mut text);
        leaderless::note_client_log(&text.0);
    }
}

/// An event's `message` field as text.
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
