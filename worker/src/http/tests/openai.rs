//! The OpenAI-compatible routes against the fake worker: credentials, OpenAI's error shape,
//! what reaches the log, and an answer followed from live events or from the conversation.

use super::*;
use crate::http::chat::keyed_message_id;
use crate::live::cursor::{Pos, Topic};
use crate::view::MessageView;

fn completion(model: &str, content: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream})
}

fn complete_as(token: &str, conversation: Option<&str>, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut b = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"));
    if let Some(c) = conversation {
        b = b.header("x-meshchat-conversation", c);
    }
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(Body::from(body.to_string())).expect("request")
}

fn reply(id: &str, in_reply_to: &str, content: &str) -> MessageView {
    MessageView {
        id: id.into(),
        sender: "agent".into(),
        content: content.into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        in_reply_to: Some(in_reply_to.into()),
        node: Some("node-0".into()),
        error: None,
        cancelled: false,
    }
}

#[tokio::test]
async fn the_openai_routes_want_a_credential_and_answer_in_openais_shape() {
    let s = Arc::new(fake());
    let routes = [
        ("POST", "/v1/chat/completions", completion("support", "hi", false)),
        ("GET", "/v1/models", Value::Null),
        ("GET", "/v1/models/support", Value::Null),
    ];
    for (method, path, body) in &routes {
        for auth in [None, Some("Bearer nope"), Some("k-admin")] {
            let mut b = Request::builder().method(*method).uri(*path);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            let req = b.body(Body::from(if body.is_null() {
                String::new()
            } else {
                body.to_string()
            }));
            let resp = app(s.clone())
                .oneshot(req.expect("request"))
                .await
                .expect("response");
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert!(resp.headers().contains_key("www-authenticate"));
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            let err: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(err["error"]["type"], "authentication_error", "{err}");
            assert_eq!(err["error"]["code"], "invalid_api_key");
        }
        // the mesh's operator does not chat
        let mut b = Request::builder()
            .method(*method)
            .uri(*path)
            .header("authorization", "Bearer k-op")
            .header("x-meshchat-conversation", "c");
        if !body.is_null() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(Body::from(if body.is_null() {
            String::new()
        } else {
            body.to_string()
        }));
        let (status, err) = call(&s, req.expect("request")).await;
        assert_eq!(
            (status, err["error"]["type"].as_str()),
            (StatusCode::FORBIDDEN, Some("permission_error"))
        );
    }
    assert!(s.appended.lock().expect("lock").is_empty());

    let (status, list) = call(&s, get_as("k-u", "/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], "support");
    let (status, err) = call(&s, get_as("k-u", "/v1/models/gpt-4o")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_found"))
    );
}

#[tokio::test]
async fn bad_completions_name_the_field_and_store_nothing() {
    let mut f = fake();
    f.members
        .insert(("theirs".into(), "u".into()), Membership::Stranger);
    let s = Arc::new(f);
    let cases = [
        (
            Some("c"),
            completion("gpt-4o", "hi", false),
            StatusCode::NOT_FOUND,
            "model",
        ),
        (
            Some("c"),
            json!({"model": "support", "messages": []}),
            StatusCode::BAD_REQUEST,
            "messages",
        ),
        (
            Some("c"),
            json!({"model": "support", "messages": [{"role": "assistant", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "messages[0].role",
        ),
        (
            Some("c"),
            json!({"model": "support", "n": 3, "messages": [{"role": "user", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "n",
        ),
        (
            Some("c"),
            completion("support", &"x".repeat(65), false),
            StatusCode::PAYLOAD_TOO_LARGE,
            "messages",
        ),
        (
            None,
            completion("support", "hi", false),
            StatusCode::BAD_REQUEST,
            "X-MeshChat-Conversation",
        ),
        (
            Some("bad id!"),
            completion("support", "hi", false),
            StatusCode::BAD_REQUEST,
            "X-MeshChat-Conversation",
        ),
    ];
    for (conversation, body, want, param) in cases {
        let (status, err) = call(&s, complete_as("k-admin", conversation, None, &body)).await;
        assert_eq!(status, want, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // another user's conversation: as if it did not exist
    let (status, err) = call(
        &s,
        complete_as("k-u", Some("theirs"), None, &completion("support", "hi", false)),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert!(s.appended.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_completion_is_stored_like_a_send_and_answered_from_the_conversation() {
    let mut f = fake();
    // a retry (same key) finds its reply in the conversation, which another tenant's admin
    // does not reach: its key is its own tenant's
    let id = keyed_message_id("default", "c", "k1");
    let mut view = conversation("c");
    view.messages.push(reply("rep-1", &id, "Hello there"));
    f.local.insert("c".into(), Local::Found(view));
    let s = Arc::new(f);
    let (status, body) = call(
        &s,
        complete_as(
            "k-admin",
            Some("c"),
            Some("k1"),
            &completion("support", "hi", false),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], format!("chatcmpl-{id}"));
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let appended = s.appended.lock().expect("lock").clone();
    assert_eq!(appended.len(), 1);
    assert_eq!(
        (
            appended[0].id.as_str(),
            appended[0].content.as_str(),
            appended[0].user_id.as_str()
        ),
        (id.as_str(), "hi", "root")
    );
    // named by `user` when no header names it: one conversation per user
    let mut f = fake();
    let conv = crate::validate::conversation_of_user("ann@example.com");
    let id = keyed_message_id("default", &conv, "k2");
    let mut view = conversation(&conv);
    view.messages.push(reply("rep-2", &id, "Hi Ann"));
    f.local.insert(conv.clone(), Local::Found(view));
    let s = Arc::new(f);
    let mut body = completion("support", "hello", false);
    body["user"] = json!("ann@example.com");
    let (status, answer) = call(&s, complete_as("k-admin", None, Some("k2"), &body)).await;
    assert_eq!(
        (status, answer["choices"][0]["message"]["content"].as_str()),
        (StatusCode::OK, Some("Hi Ann"))
    );
    assert_eq!(s.appended.lock().expect("lock")[0].conversation_id, conv);
}

#[tokio::test]
async fn a_streamed_completion_turns_tokens_into_chunks_and_ends_with_done() {
    let (tx, _keep) = broadcast::channel(64);
    let mut f = fake();
    f.live = Some(tx.clone());
    let s = Arc::new(f);
    let id = keyed_message_id("default", "c", "k3");
    let feeder = {
        let (id, tx) = (id.clone(), tx.clone());
        tokio::spawn(async move {
            // after the handler subscribed and stored the message
            tokio::time::sleep(Duration::from_millis(200)).await;
            let token = |seq: u32, delta: &str| LiveEvent::Token {
                in_reply_to: id.clone(),
                reply_id: "rep-3".into(),
                epoch: 1,
                attempt: 0,
                seq,
                delta: delta.into(),
            };
            // another message's token is not this answer's
            let other = LiveEvent::Token {
                in_reply_to: "msg-other".into(),
                reply_id: "rep-9".into(),
                epoch: 1,
                attempt: 0,
                seq: 0,
                delta: "NOT MINE".into(),
            };
            for (at, e) in [(1, token(0, "Hel")), (2, other), (3, token(1, "lo"))] {
                let _ = tx.send(Arc::new(Positioned {
                    pos: Pos::new(Topic::Stream, at),
                    event: e,
                }));
            }
            // a token missed on the way: the stored reply's rest follows
            let _ = tx.send(Arc::new(Positioned {
                pos: Pos::new(Topic::Messages, 9),
                event: LiveEvent::Reply {
                    message: reply("rep-3", &id, "Hello, world"),
                },
            }));
        })
    };
    let resp = app(s.clone())
        .oneshot(complete_as(
            "k-admin",
            Some("c"),
            Some("k3"),
            &completion("support", "hi", true),
        ))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/event-stream"))
    );
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    feeder.await.expect("feeder");
    let text = String::from_utf8_lossy(&bytes);
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == format!("chatcmpl-{id}"))
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(said, "Hello, world");
    assert_eq!(
        chunks.last().map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("stop"))
    );
}

#[tokio::test]
async fn an_error_reply_is_an_openai_error() {
    let mut f = fake();
    let id = keyed_message_id("default", "c", "k4");
    let mut failed = reply("rep-4", &id, "[error] The LLM did not answer in time");
    failed.error = Some(meshchat_wire::ReplyError {
        kind: meshchat_wire::ReplyErrorKind::Timeout,
        message: "The LLM did not answer in time".into(),
        attempts: 3,
    });
    let mut view = conversation("c");
    view.messages.push(failed);
    f.local.insert("c".into(), Local::Found(view));
    let s = Arc::new(f);
    let (status, err) = call(
        &s,
        complete_as(
            "k-admin",
            Some("c"),
            Some("k4"),
            &completion("support", "hi", false),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        (err["error"]["type"].as_str(), err["error"]["code"].as_str()),
        (Some("api_error"), Some("timeout"))
    );
    let resp = app(s.clone())
        .oneshot(complete_as(
            "k-admin",
            Some("c"),
            Some("k4"),
            &completion("support", "hi", true),
        ))
        .await
        .expect("response");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(r#""type":"api_error""#) && !text.contains("[DONE]"),
        "{text}"
    );
}
