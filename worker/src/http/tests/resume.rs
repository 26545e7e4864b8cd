//! Live streams resume from an event id: `Last-Event-ID` (SSE) or `?after=`.

use super::*;
use crate::live::cursor::{Pos, Topic};
use crate::view::MessageView;

fn token(seq: u32, delta: &str) -> LiveEvent {
    LiveEvent::Token {
        in_reply_to: "m-1".into(),
        reply_id: "r-1".into(),
        epoch: 1,
        attempt: 0,
        seq,
        delta: delta.into(),
    }
}

fn message(id: &str, content: &str, in_reply_to: Option<&str>) -> MessageView {
    MessageView {
        id: id.into(),
        sender: "u".into(),
        content: content.into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        in_reply_to: in_reply_to.map(Into::into),
        node: None,
        error: None,
        cancelled: false,
    }
}

fn at(topic: Topic, offset: i64, event: LiveEvent) -> Positioned {
    Positioned {
        pos: Pos::new(topic, offset),
        event,
    }
}

/// The first `n` SSE events of `resp`: (id, event name, data).
async fn sse_events(resp: axum::response::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events within 5 s")
            .expect("a frame")
            .expect("body");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_string)
                    .unwrap_or_default()
            };
            if block.lines().all(|l| l.starts_with(':')) {
                continue; // keep-alive
            }
            let data = serde_json::from_str(&field("data: ")).expect("JSON data");
            out.push((field("id: "), field("event: "), data));
        }
    }
    out
}

#[tokio::test]
async fn a_resume_sends_what_was_missed_then_live_events_each_once_with_growing_ids() {
    let (tx, _keep) = broadcast::channel(64);
    let mut f = fake();
    f.live = Some(tx.clone());
    // in the log: message m-1 at 10, tokens at stream 4..7, the reply at 12
    f.stored = vec![
        at(
            Topic::Messages,
            10,
            LiveEvent::Message {
                message: message("m-1", "hi", None),
            },
        ),
        at(Topic::Stream, 4, token(0, "He")),
        at(Topic::Stream, 5, token(1, "ll")),
        at(Topic::Stream, 6, token(2, "o")),
        at(
            Topic::Messages,
            12,
            LiveEvent::Reply {
                message: message("r-1", "Hello", Some("m-1")),
            },
        ),
    ];
    let s = Arc::new(f);
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // live delivery repeats the end of what was read back, then goes on
        for e in [
            at(Topic::Stream, 6, token(2, "o")),
            at(
                Topic::Messages,
                12,
                LiveEvent::Reply {
                    message: message("r-1", "Hello", Some("m-1")),
                },
            ),
            at(
                Topic::Messages,
                13,
                LiveEvent::Message {
                    message: message("m-2", "more", None),
                },
            ),
        ] {
            let _ = tx.send(Arc::new(e));
        }
        tx
    });
    // the client had message m-1 and the first token: it stands at 11.5.0
    let req = Request::get("/api/chat/conversation/c/events")
        .header("authorization", "Bearer k-admin")
        .header("last-event-id", "11.5.0")
        .body(Body::empty())
        .expect("request");
    let resp = app(s.clone()).oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let events = sse_events(resp, 4).await;
    let _tx = feeder.await.expect("feeder");
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|(id, name, _)| (id.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("11.6.0", "token"),
            ("11.7.0", "token"),
            ("13.7.0", "reply"),
            ("14.7.0", "message")
        ]
    );
    // the id is in the event's JSON too (the WebSocket's only place for it)
    assert!(events.iter().all(|(id, _, data)| data["id"] == json!(id)));
    assert_eq!(events[0].2["delta"], "ll");
    assert_eq!(events[3].2["message"]["id"], "m-2");
}

#[tokio::test]
async fn an_id_that_is_not_one_or_is_past_the_log_is_refused_naming_where_it_came() {
    let s = Arc::new(fake());
    for (header, query, field) in [
        (Some("12.x.0"), "", "Last-Event-ID"),
        (None, "?after=12.0", "after"),
        (None, "?after=1.2000.0", "after"),
    ] {
        let mut req = Request::get(format!("/api/chat/conversation/c/events{query}"))
            .header("authorization", "Bearer k-admin");
        if let Some(h) = header {
            req = req.header("last-event-id", h);
        }
        let (status, body) = call(&s, req.body(Body::empty()).expect("request")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let (status, body) = call(&s, get("/api/chat/ws?conversationId=c&after=nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "after", "{body}");
}

/// `GET /internal/live/{key}`: a peer's relay of a conversation's events — the mesh secret
/// only, an `after` that is an event id, where it starts in `x-meshchat-from`, each event with
/// the record it comes from (the peer merges and gives ids itself); never on the public port.
#[tokio::test]
async fn a_peer_is_relayed_events_with_their_records_after_its_id() {
    let (tx, _keep) = broadcast::channel(64);
    let mut f = fake();
    f.settings.mesh_secret = Some("s3cret-mesh".into());
    f.live = Some(tx.clone());
    f.stored = vec![
        at(Topic::Stream, 5, token(1, "ll")),
        at(Topic::Stream, 6, token(2, "o")),
    ];
    let s = Arc::new(f);
    let relay = |after: &str, secret: Option<&str>| {
        let mut req = Request::get(format!("/internal/live/acme/c?after={after}"));
        if let Some(secret) = secret {
            req = req.header("authorization", format!("Bearer {secret}"));
        }
        req.body(Body::empty()).expect("request")
    };
    for secret in [None, Some("nope")] {
        let resp = internal_app(s.clone())
            .oneshot(relay("11.5.0", secret))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = internal_app(s.clone())
        .oneshot(relay("11.x.0", Some("s3cret-mesh")))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["field"], "after");
    let (status, _) = call(&s, relay("11.5.0", Some("s3cret-mesh"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the public port");

    let resp = internal_app(s.clone())
        .oneshot(relay("11.5.0", Some("s3cret-mesh")))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-meshchat-from"], "11.5.0");
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = LiveEvent::Reply {
            message: message("r-1", "Hello", Some("m-1")),
        };
        let _ = tx.send(Arc::new(at(Topic::Messages, 12, reply)));
        tx
    });
    let events = sse_events(resp, 3).await;
    let _tx = feeder.await.expect("feeder");
    let records: Vec<(&str, i64, &str)> = events
        .iter()
        .map(|(_, _, d)| {
            (
                d["topic"].as_str().unwrap_or_default(),
                d["offset"].as_i64().unwrap_or(-1),
                d["event"]["type"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            ("stream", 5, "token"),
            ("stream", 6, "token"),
            ("messages", 12, "reply")
        ]
    );
    assert_eq!(events[2].0, "13.7.0", "the SSE id is the peer's position too");
}
