//! The LLM client: async-openai with streaming, per-attempt timeouts, stall detection and
//! bounded retries with exponential backoff (backon) that honour the LLM's `Retry-After`.
//! Works with any OpenAI-compatible endpoint.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    CreateChatCompletionStreamResponse,
};
use futures::{FutureExt, StreamExt};
use meshchat_wire::ReplyErrorKind;

use crate::context::{Role, Turn};

mod genai;
mod pacing;
mod propagate;
mod retry_after;
use backon::BackoffBuilder;
use genai::Seen;
use pacing::Pacer;
use propagate::Propagate;
use retry_after::RetryAfter;
use tracing::Instrument as _;

/// The longest wait between attempts; an LLM asking for more (`Retry-After`) gets an error reply
/// saying when to try again instead of an answer slot held that long.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// LLM settings.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// Base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// API key (may be empty for local servers).
    pub api_key: String,
    /// Model.
    pub model: String,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Max completion tokens.
    pub max_tokens: u32,
    /// One attempt's limit, and the longest stall between chunks.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff.
    pub backoff: Duration,
    /// Least time between two streamed pieces of one reply (zero: every token as it arrives).
    pub chunk_interval: Duration,
}

/// Why the LLM gave no answer, after all attempts.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{detail} (after {attempts} attempts)")]
pub struct LlmError {
    /// Class of failure.
    pub kind: ReplyErrorKind,
    /// Cause in a few words, shown to chat users: never an address or an upstream's own text.
    pub message: String,
    /// The whole cause (error chains can name the LLM's internal URL): for logs only.
    pub detail: String,
    /// Attempts made.
    pub attempts: u32,
}

/// A finished answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Full text.
    pub content: String,
    /// The attempt that produced it (0-based).
    pub attempt: u32,
}

/// The client.
#[derive(Clone)]
pub struct Llm {
    client: Client<OpenAIConfig>,
    settings: LlmSettings,
}

struct AttemptError {
    kind: ReplyErrorKind,
    /// For chat users.
    message: String,
    /// For logs.
    detail: String,
    retryable: bool,
}

// === impl Llm ===

impl Llm {
    /// Creates the client. Retries are ours (counted and bounded), so the library's are off.
    pub fn new(settings: LlmSettings) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(settings.base_url.trim_end_matches('/'))
            .with_api_key(settings.api_key.clone());
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .unwrap_or_default();
        let client = Client::with_config(config)
            .with_http_service(RetryAfter::new(Propagate::new(ReqwestService::new(http))));
        Self { client, settings }
    }

    /// Streams an answer to `context` (of `conversation`), calling `on_delta(attempt, text)`
    /// for each piece. A new attempt restarts the text (callers mark pieces with the attempt
    /// number).
    pub async fn stream(
        &self,
        context: &[Turn],
        conversation: &str,
        mut on_delta: impl FnMut(u32, &str),
    ) -> Result<Completion, LlmError> {
        let request = self.request(context).map_err(|e| LlmError {
            kind: ReplyErrorKind::Rejected,
            message: "The request to the model could not be built".into(),
            detail: format!("invalid request: {e}"),
            attempts: 0,
        })?;
        let mut attempt = 0u32;
        let mut backoff = self.backoff();
        loop {
            let span = genai::chat_span(&self.settings, attempt, conversation);
            let mut seen = Seen::default();
            let (outcome, asked) = retry_after::observed(
                self.attempt(request.clone(), attempt, &mut seen, &mut on_delta)
                    .instrument(span.clone()),
            )
            .await;
            seen.record(&span, outcome.as_ref().err().map(|e| e.kind));
            let e = match outcome {
                Ok(content) => return Ok(Completion { content, attempt }),
                Err(e) => e,
            };
            let delay = if e.retryable { backoff.next() } else { None };
            match (delay, asked) {
                (Some(_), Some(asked)) if asked > MAX_RETRY_WAIT => {
                    let secs = asked.as_secs();
                    return Err(LlmError {
                        kind: e.kind,
                        message: format!("The model is busy; try again in {secs}s"),
                        detail: format!("{} (Retry-After {secs}s: longer than we wait)", e.detail),
                        attempts: attempt + 1,
                    });
                }
                (Some(delay), asked) => {
                    // the LLM's Retry-After, when it said one, else our backoff
                    let wait = asked.unwrap_or(delay);
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, retry_after = asked.is_some(), error = %e.detail, "LLM attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                (None, _) => {
                    return Err(LlmError {
                        kind: e.kind,
                        message: e.message,
                        detail: e.detail,
                        attempts: attempt + 1,
                    });
                }
            }
        }
    }

    /// The waits between attempts: doubling from the configured backoff, with jitter so that
    /// synchronized failures do not retry in lockstep, as many as the retries allowed.
    fn backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.settings.backoff)
            // backon's jitter adds up to the wait again: at most MAX_RETRY_WAIT in all
            .with_max_delay(MAX_RETRY_WAIT / 2)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.settings.retries as usize)
            .build()
    }

    #[allow(deprecated)] // `max_tokens`: what vLLM, Ollama and OpenAI all accept
    fn request(&self, context: &[Turn]) -> Result<CreateChatCompletionRequest, OpenAIError> {
        let messages: Vec<ChatCompletionRequestMessage> = context
            .iter()
            .map(|t| match t.role {
                Role::System => ChatCompletionRequestSystemMessage::from(t.content.clone()).into(),
                Role::User => ChatCompletionRequestUserMessage::from(t.content.as_str()).into(),
                Role::Assistant => ChatCompletionRequestAssistantMessage::from(t.content.clone()).into(),
            })
            .collect();
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(self.settings.model.clone())
            .messages(messages)
            .max_tokens(self.settings.max_tokens)
            .stream(true);
        if let Some(t) = self.settings.temperature {
            args.temperature(t);
        }
        args.build()
    }

    async fn attempt(
        &self,
        request: CreateChatCompletionRequest,
        attempt: u32,
        seen: &mut Seen,
        on_delta: &mut impl FnMut(u32, &str),
    ) -> Result<String, AttemptError> {
        let limit = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let mut stream = tokio::time::timeout_at(deadline, self.client.chat().create_stream(request))
            .await
            .map_err(|_| timeout_error(limit))?
            .map_err(classify)?;
        let mut content = String::new();
        let mut pending = String::new();
        let mut pacer = Pacer::new(self.settings.chunk_interval);
        let mut hold: Option<tokio::time::Instant> = None;
        let mut hand_out = |pending: &mut String, content: &mut String| {
            if !pending.is_empty() {
                on_delta(attempt, pending);
                content.push_str(pending);
                pending.clear();
            }
        };
        loop {
            // a stall between chunks counts against the same attempt deadline
            let wake = hold.map_or(deadline, |h| h.min(deadline));
            let next = match tokio::time::timeout_at(wake, stream.next()).await {
                Ok(next) => next,
                Err(_) if wake < deadline => {
                    // held text's time has come (a hold is only set with text pending)
                    pacer.sent(tokio::time::Instant::now());
                    hand_out(&mut pending, &mut content);
                    hold = None;
                    continue;
                }
                Err(_) => {
                    // what arrived before the stall still reaches live clients, as unpaced
                    hand_out(&mut pending, &mut content);
                    return Err(timeout_error(limit));
                }
            };
            match next {
                None => {
                    hand_out(&mut pending, &mut content);
                    return Ok(content);
                }
                Some(Err(e)) => {
                    hand_out(&mut pending, &mut content);
                    return Err(classify(e));
                }
                Some(Ok(chunk)) => {
                    // tokens that have already arrived go out together: a fast model's burst
                    // becomes one chunk record instead of one per token
                    append_deltas(&mut pending, chunk, seen);
                    let mut end = None;
                    while pending.len() < MAX_BATCH_BYTES {
                        match stream.next().now_or_never() {
                            None => break,
                            Some(Some(Ok(chunk))) => append_deltas(&mut pending, chunk, seen),
                            Some(Some(Err(e))) => {
                                end = Some(Err(classify(e)));
                                break;
                            }
                            Some(None) => {
                                end = Some(Ok(()));
                                break;
                            }
                        }
                    }
                    if let Some(end) = end {
                        hand_out(&mut pending, &mut content);
                        return end.map(|()| content);
                    }
                    // chunks without text (a role announcement, a reasoning model's empty
                    // deltas) neither go out nor start the pacing clock
                    if pending.is_empty() {
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    match hold.or_else(|| pacer.hold_until(now)) {
                        Some(until) if until > now && pending.len() < MAX_BATCH_BYTES => hold = Some(until),
                        _ => {
                            pacer.sent(now);
                            hand_out(&mut pending, &mut content);
                            hold = None;
                        }
                    }
                }
            }
        }
    }
}

/// Most text gathered into one piece from tokens that arrived together.
const MAX_BATCH_BYTES: usize = 4096;

fn append_deltas(batch: &mut String, chunk: CreateChatCompletionStreamResponse, seen: &mut Seen) {
    seen.chunk(&chunk);
    for choice in chunk.choices {
        if let Some(delta) = choice.delta.content {
            batch.push_str(&delta);
        }
    }
}

fn timeout_error(limit: Duration) -> AttemptError {
    let message = format!("The model did not answer within {:.1}s", limit.as_secs_f64());
    AttemptError {
        kind: ReplyErrorKind::Timeout,
        detail: message.clone(),
        message,
        retryable: true,
    }
}

fn classify(e: OpenAIError) -> AttemptError {
    match e {
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let retryable = status == 429 || status >= 500 || status == 408;
            let (kind, message) = if retryable {
                (
                    ReplyErrorKind::Upstream,
                    format!("The model failed (HTTP {status})"),
                )
            } else {
                (
                    ReplyErrorKind::Rejected,
                    format!("The model refused the request (HTTP {status})"),
                )
            };
            AttemptError {
                kind,
                message,
                detail: format!(
                    "LLM answered HTTP {status}: {}",
                    truncate(&resp.api_error.message, 200)
                ),
                retryable,
            }
        }
        OpenAIError::Reqwest(e) if e.is_timeout() => AttemptError {
            kind: ReplyErrorKind::Timeout,
            message: "The model did not answer in time".into(),
            detail: format!("LLM request timed out: {}", error_chain(&e)),
            retryable: true,
        },
        OpenAIError::Reqwest(e) => AttemptError {
            kind: ReplyErrorKind::Unavailable,
            message: "The model could not be reached".into(),
            detail: format!("LLM unreachable: {}", error_chain(&e)),
            retryable: true,
        },
        other => AttemptError {
            kind: ReplyErrorKind::Upstream,
            message: "The model's answer broke off".into(),
            detail: format!("LLM stream failed: {}", truncate(&other.to_string(), 300)),
            retryable: true,
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    truncate(&out, 300)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
