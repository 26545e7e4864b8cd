//! `GET /api/chat/conversation/{id}?before=&limit=`: pages of a history, from what a worker
//! holds or, for older messages, from the whole log.

use super::*;
use crate::view::MessageView;

fn view(ids: std::ops::Range<usize>, has_more: bool) -> ConversationView {
    ConversationView {
        id: "c".into(),
        participants: vec!["u".into()],
        messages: ids
            .map(|i| MessageView {
                id: format!("m-{i}"),
                sender: "u".into(),
                content: format!("message {i}"),
                timestamp: OffsetDateTime::UNIX_EPOCH,
                in_reply_to: None,
                node: None,
                error: None,
                cancelled: false,
            })
            .collect(),
        has_more,
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A worker holding messages 20..30 of a conversation whose log has 0..30.
fn service() -> Arc<Fake> {
    let mut f = fake();
    f.local.insert("c".into(), Local::Found(view(20..30, true)));
    f.history = Some(view(0..30, false));
    Arc::new(f)
}

#[tokio::test]
async fn pages_come_from_memory_while_it_holds_them_then_from_the_log() {
    let s = service();
    let (status, body) = call(&s, get("/api/chat/conversation/c?limit=4")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["m-26", "m-27", "m-28", "m-29"]);
    assert_eq!(body["hasMore"], true);
    let (_, body) = call(&s, get("/api/chat/conversation/c?before=m-26&limit=6")).await;
    assert_eq!(ids(&body), ["m-20", "m-21", "m-22", "m-23", "m-24", "m-25"]);
    assert!(s.log_reads.lock().expect("lock").is_empty(), "served from memory");
    // older than memory holds: the whole history from the log
    let (status, body) = call(&s, get("/api/chat/conversation/c?before=m-22&limit=5")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["m-17", "m-18", "m-19", "m-20", "m-21"]);
    assert_eq!(body["hasMore"], true);
    let (_, body) = call(&s, get("/api/chat/conversation/c?before=m-3")).await;
    assert_eq!(ids(&body), ["m-0", "m-1", "m-2"], "limit 50 by default");
    assert_eq!(body["hasMore"], false);
    assert_eq!(s.log_reads.lock().expect("lock").len(), 2);
    // without paging: what the worker holds, saying more exists
    let (_, body) = call(&s, get("/api/chat/conversation/c")).await;
    assert_eq!(ids(&body).len(), 10);
    assert_eq!(body["hasMore"], true);
}

#[tokio::test]
async fn a_bad_page_is_refused_naming_the_field() {
    let s = service();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("before=bad%20id", "before"),
        ("before=m-99", "before"),
    ] {
        let (status, body) = call(&s, get(&format!("/api/chat/conversation/c?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn another_tenants_conversation_is_not_paged() {
    let s = service();
    let (status, _) = call(&s, get_as("k-alice", "/api/chat/conversation/c?limit=5")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &s,
        Request::get("/api/chat/conversation/c?limit=5")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
