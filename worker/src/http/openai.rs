//! OpenAI-compatible endpoint: `POST /v1/chat/completions` (streamed and not) and
//! `GET /v1/models`, so OpenAI's SDKs and the chat UIs built on them use MeshChat with a
//! MeshChat credential as their API key.
//!
//! The conversation is named by the `X-MeshChat-Conversation` header, else derived from the
//! body's `user` (one conversation per OpenAI user); the request's last message is the new user
//! message, stored and answered exactly as `POST /api/chat/send` would (limits, membership,
//! `Idempotency-Key`). The answer is followed on this worker's live events (tokens become
//! chunks) and, as a safety net, in the conversation itself. Errors have OpenAI's shape.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::ChatService;
use super::caller::Caller;
use super::chat::{accept, idempotency_key, read};
use super::error::{AppError, Body};
use super::feed::{Feed, FeedNext};
use super::stream::open_failed;
use crate::validate::{FieldError, SendRequest, check_id, conversation_of_user, parse_completion};
use crate::view::{LiveEvent, MessageView};

/// Header naming the conversation a completion continues.
pub const CONVERSATION_HEADER: &str = "x-meshchat-conversation";

/// How long a completion waits for its reply before answering that it is still coming.
const REPLY_WAIT: Duration = Duration::from_secs(600);

/// How often the conversation itself is looked at while waiting (live events may be missed:
/// a lagging subscriber, a reply written before a retried request subscribed).
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// `GET /v1/models`: the one model this mesh serves, its ChatAgent.
pub async fn models<S: ChatService>(State(s): State<Arc<S>>, caller: Result<Caller, AppError>) -> Response {
    match caller.and_then(|c| c.chats()) {
        Ok(()) => Json(json!({"object": "list", "data": [model(&s.settings().model)]})).into_response(),
        Err(e) => openai_error(e),
    }
}

/// `GET /v1/models/{model}`.
pub async fn model_by_id<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = caller.and_then(|c| c.chats()) {
        return openai_error(e);
    }
    if id == s.settings().model {
        Json(model(&id)).into_response()
    } else {
        model_not_found(&id, &s.settings().model)
    }
}

fn model(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "meshchat"})
}

/// `POST /v1/chat/completions`.
pub async fn completions<S: ChatService>(
    State(s): State<Arc<S>>,
    caller: Result<Caller, AppError>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    match complete(s, caller, &headers, &body).await {
        Ok(response) => response,
        Err(e) => openai_error(e),
    }
}

async fn complete<S: ChatService>(
    s: Arc<S>,
    caller: Result<Caller, AppError>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let caller = caller?;
    caller.chats()?;
    let req = parse_completion(body, s.settings().max_content_bytes)?;
    if req.model != s.settings().model {
        return Ok(model_not_found(&req.model, &s.settings().model));
    }
    let conversation = match headers.get(CONVERSATION_HEADER) {
        Some(v) => {
            let id = v
                .to_str()
                .map_err(|_| FieldError::new("X-MeshChat-Conversation", "must be visible ASCII"))?;
            check_id("X-MeshChat-Conversation", id)?;
            id.to_string()
        }
        None => match &req.user {
            Some(user) => conversation_of_user(user),
            None => {
                return Err(FieldError::new(
                    "X-MeshChat-Conversation",
                    "name the conversation with this header, or send the body's `user`",
                )
                .into());
            }
        },
    };
    let keyed = idempotency_key(headers)?;
    let who = &caller.who;
    let key = who.key(&conversation);
    // a held connection is a stream: it counts against the caller's and the tenant's caps
    let permit = s.limits().open_stream(&who.tenant, &who.user)?;
    // the feed starts before the message is stored, so none of its reply's events is missed
    let feed = Feed::open(&s, &key, None, true)
        .await
        .map_err(|e| open_failed(e, "after"))?;
    let send = SendRequest {
        conversation_id: conversation.clone(),
        user_id: None,
        content: req.content,
        timestamp: None,
    };
    let (message_id, _) = accept(&*s, &caller, keyed, send).await?;
    let follow = Follow {
        service: s,
        feed,
        key,
        conversation,
        message_id,
        // a retry (same Idempotency-Key) may find its reply there already; otherwise the
        // first look waits, giving the live events their chance
        looked: keyed.is_none().then(tokio::time::Instant::now),
        live: true,
    };
    let shape = Shape {
        id: format!("chatcmpl-{}", follow.message_id),
        created: OffsetDateTime::now_utc().unix_timestamp(),
        model: req.model,
    };
    if req.stream {
        Ok(stream(follow, shape, permit).into_response())
    } else {
        Ok(whole(follow, shape).await)
    }
}

/// What the chunks and the completion carry besides the text.
struct Shape {
    id: String,
    created: i64,
    model: String,
}

impl Shape {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
        .to_string()
    }

    fn completion(&self, text: &str) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null, "finish_reason": "stop",
            }],
            "usage": null,
        })
    }
}

/// What following a message's answer yields.
enum Step {
    /// A piece of text of one generation of the answer (owner epoch, LLM attempt): a new one
    /// starts the text again.
    Delta((u64, u32), String),
    /// The stored reply.
    Reply(MessageView),
    /// No reply within [`REPLY_WAIT`], or the worker is closing.
    GaveUp(String),
}

/// Follows the answer to `message_id` in conversation `key`.
struct Follow<S: ChatService> {
    service: Arc<S>,
    feed: Feed<S>,
    key: String,
    conversation: String,
    message_id: String,
    /// When the conversation was last looked at; `None`: look now.
    looked: Option<tokio::time::Instant>,
    /// The live events still come.
    live: bool,
}

impl<S: ChatService> Follow<S> {
    async fn next(&mut self, deadline: tokio::time::Instant) -> Step {
        let closing = self.service.closing();
        loop {
            let look_at = self
                .looked
                .map_or_else(tokio::time::Instant::now, |t| t + LOOK_EVERY);
            let event = tokio::select! {
                e = self.feed.next(), if self.live => e,
                () = tokio::time::sleep_until(look_at) => {
                    self.looked = Some(tokio::time::Instant::now());
                    if let Some(reply) = self.look().await {
                        return Step::Reply(reply);
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Step::GaveUp(format!(
                        "no reply within {} s; it will be stored in conversation {:?}",
                        REPLY_WAIT.as_secs(),
                        self.conversation
                    ));
                }
                () = closing.cancelled() => {
                    return Step::GaveUp("this worker is shutting down; the reply will be stored in the conversation".into());
                }
            };
            match event {
                FeedNext::Event(e, _) => match &e.event {
                    LiveEvent::Token {
                        in_reply_to,
                        delta,
                        epoch,
                        attempt,
                        ..
                    } if *in_reply_to == self.message_id => {
                        return Step::Delta((*epoch, *attempt), delta.clone());
                    }
                    LiveEvent::Reply { message }
                        if message.in_reply_to.as_deref() == Some(&self.message_id) =>
                    {
                        return Step::Reply(message.clone());
                    }
                    _ => {}
                },
                // events were missed: the conversation says whether the reply is there
                FeedNext::Lagged(_) => self.looked = None,
                FeedNext::End => {
                    self.live = false;
                    self.looked = None;
                }
            }
        }
    }

    /// The reply, if the conversation has it already.
    async fn look(&self) -> Option<MessageView> {
        let view = read(&*self.service, &self.key, &self.conversation).await.ok()?;
        view.messages
            .into_iter()
            .find(|m| m.in_reply_to.as_deref() == Some(self.message_id.as_str()))
    }
}

/// The whole answer as one completion.
async fn whole<S: ChatService>(mut follow: Follow<S>, shape: Shape) -> Response {
    let deadline = tokio::time::Instant::now() + REPLY_WAIT;
    loop {
        match follow.next(deadline).await {
            Step::Delta(..) => {}
            Step::Reply(reply) => {
                return match &reply.error {
                    Some(e) => reply_failed(&kind_code(e.kind), &e.message),
                    None => Json(shape.completion(&reply.content)).into_response(),
                };
            }
            Step::GaveUp(why) => return still_coming(&why),
        }
    }
}

/// The answer as chunks: a role chunk, a chunk per token, the rest of the stored reply if
/// tokens were missed, the final chunk and `[DONE]`; an error reply ends with an error event.
fn stream<S: ChatService>(
    mut follow: Follow<S>,
    shape: Shape,
    permit: crate::limits::StreamPermit,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = tokio::time::Instant::now() + REPLY_WAIT;
        let role = json!({"role": "assistant", "content": ""});
        if tx
            .send(Event::default().data(shape.chunk(role, None)))
            .await
            .is_err()
        {
            return;
        }
        // OpenAI's chunks cannot take text back: a new generation (retried LLM attempt, or a
        // new owner after a move or failover) goes on from where its text passes what was sent;
        // one that says something else sends nothing more
        let mut sent = String::new();
        let mut generation = None;
        let mut text = String::new();
        loop {
            let event = match follow.next(deadline).await {
                Step::Delta(g, delta) => {
                    if generation != Some(g) {
                        generation = Some(g);
                        text.clear();
                    }
                    text.push_str(&delta);
                    match text.strip_prefix(sent.as_str()) {
                        Some(new) if !new.is_empty() => {
                            let new = new.to_string();
                            sent.clone_from(&text);
                            Event::default().data(shape.chunk(json!({"content": new}), None))
                        }
                        _ => continue,
                    }
                }
                Step::Reply(reply) => {
                    if let Some(e) = &reply.error {
                        let _ = tx
                            .send(
                                Event::default().data(
                                    error_body("api_error", &kind_code(e.kind), &e.message).to_string(),
                                ),
                            )
                            .await;
                        return;
                    }
                    // tokens missed (or none streamed): the rest of the stored text
                    if let Some(rest) = reply.content.strip_prefix(sent.as_str())
                        && !rest.is_empty()
                        && tx
                            .send(Event::default().data(shape.chunk(json!({"content": rest}), None)))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    let _ = tx
                        .send(Event::default().data(shape.chunk(json!({}), Some("stop"))))
                        .await;
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
                Step::GaveUp(why) => {
                    let _ = tx
                        .send(Event::default().data(error_body("timeout", "reply_pending", &why).to_string()))
                        .await;
                    return;
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// An error reply's kind as its wire name (`timeout`, `upstream`, …).
fn kind_code(kind: meshchat_wire::ReplyErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "error".into())
}

/// OpenAI's error body.
fn error_body(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn model_not_found(asked: &str, served: &str) -> Response {
    let mut body = error_body(
        "invalid_request_error",
        "model_not_found",
        &format!("The model {asked:?} does not exist here; this endpoint serves {served:?} (GET /v1/models)"),
    );
    body["error"]["param"] = json!("model");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

fn reply_failed(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        Json(error_body("api_error", code, message)),
    )
        .into_response()
}

fn still_coming(why: &str) -> Response {
    (
        StatusCode::GATEWAY_TIMEOUT,
        Json(error_body("timeout", "reply_pending", why)),
    )
        .into_response()
}

/// A MeshChat error in OpenAI's shape, with the same status and `Retry-After`.
fn openai_error(e: AppError) -> Response {
    let (status, kind, code, param) = match &e {
        AppError::Field(f) if f.too_large => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "too_large",
            Some(f.field.clone()),
        ),
        AppError::Field(f) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            Some(f.field.clone()),
        ),
        AppError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found", None),
        AppError::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            None,
        ),
        AppError::Forbidden => (StatusCode::FORBIDDEN, "permission_error", "forbidden", None),
        AppError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict", None),
        AppError::NotImplemented(_) => (
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            "not_implemented",
            None,
        ),
        AppError::Unavailable(_) | AppError::Busy { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "unavailable",
            None,
        ),
        AppError::TooManyRequests { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            None,
        ),
    };
    let mut body = error_body(kind, code, &e.to_string());
    if let Some(p) = param {
        body["error"]["param"] = json!(p);
    }
    let mut response = (status, Json(body)).into_response();
    let retry = match &e {
        AppError::Busy { retry_after, .. } | AppError::TooManyRequests { retry_after, .. } => {
            Some(retry_after.as_secs().max(1))
        }
        _ => None,
    };
    if let Some(secs) = retry
        && let Ok(v) = secs.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = r#"Bearer realm="meshchat""#.parse()
    {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}
