//! One LLM call as an OpenTelemetry span, after the GenAI semantic conventions: `chat {model}`,
//! a client span per attempt, with the request's model and limits, the server, and what the
//! streamed answer said about itself (its id, model, finish reasons, usage when reported).

use async_openai::types::chat::{CreateChatCompletionStreamResponse, FinishReason};
use meshchat_wire::ReplyErrorKind;
use opentelemetry::{Array, StringValue, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::LlmSettings;
use crate::telemetry;

/// The span of attempt `attempt` (0-based) to answer in `conversation`. Disabled when tracing
/// is off.
pub fn chat_span(settings: &LlmSettings, attempt: u32, conversation: &str) -> tracing::Span {
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let (address, port) = server(&settings.base_url);
    let span = tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {}", settings.model),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "openai",
        gen_ai.request.model = %settings.model,
        gen_ai.request.max_tokens = i64::from(settings.max_tokens),
        gen_ai.request.temperature = tracing::field::Empty,
        gen_ai.conversation.id = %conversation,
        gen_ai.response.id = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        server.address = %address,
        server.port = port,
        meshchat.attempt = i64::from(attempt),
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if let Some(t) = settings.temperature {
        span.record("gen_ai.request.temperature", f64::from(t));
    }
    span
}

/// What the streamed answer said about itself.
#[derive(Default)]
pub struct Seen {
    id: Option<String>,
    model: Option<String>,
    finish_reasons: Vec<&'static str>,
    usage: Option<(u32, u32)>,
}

impl Seen {
    /// Notes what a streamed chunk tells (only while tracing: nothing is kept otherwise).
    pub fn chunk(&mut self, chunk: &CreateChatCompletionStreamResponse) {
        if !telemetry::enabled() {
            return;
        }
        if self.id.is_none() && !chunk.id.is_empty() {
            self.id = Some(chunk.id.clone());
        }
        if self.model.is_none() && !chunk.model.is_empty() {
            self.model = Some(chunk.model.clone());
        }
        for reason in chunk.choices.iter().filter_map(|c| c.finish_reason.as_ref()) {
            self.finish_reasons.push(finish_reason(reason));
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some((u.prompt_tokens, u.completion_tokens));
        }
    }

    /// Records it on `span`, with the attempt's failure if it failed.
    pub fn record(self, span: &tracing::Span, failed: Option<ReplyErrorKind>) {
        if let Some(id) = &self.id {
            span.record("gen_ai.response.id", id.as_str());
        }
        if let Some(model) = &self.model {
            span.record("gen_ai.response.model", model.as_str());
        }
        if let Some((input, output)) = self.usage {
            span.record("gen_ai.usage.input_tokens", i64::from(input));
            span.record("gen_ai.usage.output_tokens", i64::from(output));
        }
        if !self.finish_reasons.is_empty() {
            let reasons: Vec<StringValue> = self.finish_reasons.into_iter().map(StringValue::from).collect();
            span.set_attribute(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(reasons)),
            );
        }
        if let Some(kind) = failed {
            let kind = error_type(kind);
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", kind);
        }
    }
}

/// The LLM's host and port, for `server.address` and `server.port`.
fn server(base_url: &str) -> (String, i64) {
    match reqwest::Url::parse(base_url) {
        Ok(url) => (
            url.host_str().unwrap_or_default().to_string(),
            url.port_or_known_default().map_or(0, i64::from),
        ),
        Err(_) => (String::new(), 0),
    }
}

fn finish_reason(r: &FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}

/// A low-cardinality `error.type`.
fn error_type(kind: ReplyErrorKind) -> &'static str {
    match kind {
        ReplyErrorKind::Timeout => "timeout",
        ReplyErrorKind::Upstream => "upstream_error",
        ReplyErrorKind::Unavailable => "unavailable",
        ReplyErrorKind::Rejected => "rejected",
        ReplyErrorKind::Limit => "limit",
        ReplyErrorKind::NotStored => "not_stored",
        ReplyErrorKind::Quota => "quota",
        ReplyErrorKind::Other => "_OTHER",
    }
}
