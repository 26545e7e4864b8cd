//! `GET /api/chat/conversations`: the caller's conversations from the index, paged.

use meshchat_wire::{IndexEntry, conversation_key};

use super::*;
use crate::index::ConversationIndex;

fn with_index() -> Arc<Fake> {
    let mut index = ConversationIndex::default();
    let mut put = |tenant: &str, id: &str, users: &[&str], at: i64| {
        let e = IndexEntry {
            v: 1,
            tenant: tenant.into(),
            conversation_id: id.into(),
            title: format!("about {id}"),
            participants: users.iter().map(|u| (*u).to_string()).collect(),
            last_activity_ms: 1_764_000_000_000 + at,
            message_count: 2,
        };
        index.upsert(&conversation_key(tenant, id), &e);
    };
    for i in 0..5 {
        put("default", &format!("u-{i}"), &["u"], i);
    }
    put("default", "v-only", &["v"], 10);
    put("acme", "alice-1", &["alice"], 20);
    let mut f = fake();
    f.index = Some(index);
    Arc::new(f)
}

fn ids(body: &Value) -> Vec<String> {
    body["conversations"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_user_pages_through_its_own_conversations_most_recent_first() {
    let s = with_index();
    let (status, body) = call(&s, get_as("k-u", "/api/chat/conversations?limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["u-4", "u-3"]);
    assert_eq!(body["total"], 5);
    assert_eq!(body["conversations"][0]["title"], "about u-4");
    assert_eq!(body["conversations"][0]["messageCount"], 2);
    assert!(
        body["conversations"][0]["lastActivity"]
            .as_str()
            .is_some_and(|t| t.starts_with("2025-"))
    );
    let mut seen = ids(&body);
    let mut cursor = body["nextCursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let (_, body) = call(
            &s,
            get_as("k-u", &format!("/api/chat/conversations?limit=2&cursor={c}")),
        )
        .await;
        seen.extend(ids(&body));
        cursor = body["nextCursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, ["u-4", "u-3", "u-2", "u-1", "u-0"]);
}

#[tokio::test]
async fn an_admin_lists_its_tenant_and_no_one_sees_another_tenants() {
    let s = with_index();
    let (_, body) = call(&s, get("/api/chat/conversations")).await;
    assert_eq!(ids(&body), ["v-only", "u-4", "u-3", "u-2", "u-1", "u-0"]);
    let (_, body) = call(&s, get_as("k-v", "/api/chat/conversations")).await;
    assert_eq!(ids(&body), ["v-only"]);
    let (_, body) = call(&s, get_as("k-alice", "/api/chat/conversations")).await;
    assert_eq!(ids(&body), ["alice-1"]);
    let (_, body) = call(&s, get_as("k-acme-admin", "/api/chat/conversations")).await;
    assert_eq!(ids(&body), ["alice-1"]);
}

#[tokio::test]
async fn no_token_bad_input_and_a_loading_index_are_answered_plainly() {
    let s = with_index();
    let (status, _) = call(
        &s,
        Request::get("/api/chat/conversations")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=nope", "cursor"),
    ] {
        let (status, body) = call(&s, get(&format!("/api/chat/conversations?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let loading = Arc::new(fake());
    let resp = app(loading)
        .oneshot(get("/api/chat/conversations"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
}
