//! The web pages and what they need from the API: public pages with a strict
//! Content-Security-Policy, revalidated assets, the mesh's endpoints, CORS between the mesh's
//! own workers only, and the mesh page's load history and moves.

use axum::http::header;
use meshchat_wire::{AssignReason, HandoffEvent, HandoffStep};

use super::*;
use crate::mesh::history::Sample;

/// Handoff steps of one requested move of partition 3 (node-1 → node-0), 250 ms paused.
pub(super) fn moved() -> Vec<HandoffEvent> {
    let at = |ms: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms);
    let step = |step: HandoffStep, ms: i64| HandoffEvent {
        v: 1,
        partition: 3,
        epoch: 4,
        from: "node-1".into(),
        to: "node-0".into(),
        step,
        committed_offset: None,
        replayed: None,
        timestamp: at(ms),
    };
    vec![
        step(HandoffStep::Assigned(AssignReason::Requested), 1_000),
        step(HandoffStep::Releasing, 1_050),
        step(HandoffStep::Released, 1_200),
        step(HandoffStep::Live, 1_300),
    ]
}

/// node-0's load over two samples.
pub(super) fn samples() -> Vec<Sample> {
    vec![
        Sample {
            at_ms: 1_000,
            load: 0.25,
            messages_per_s: 2.0,
        },
        Sample {
            at_ms: 6_000,
            load: 0.5,
            messages_per_s: 4.0,
        },
    ]
}

async fn raw(s: &Arc<Fake>, req: Request<Body>) -> axum::response::Response {
    app(s.clone()).oneshot(req).await.expect("a response")
}

fn anonymous(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

fn header_of(resp: &axum::response::Response, name: header::HeaderName) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_pages_are_public_html_under_a_strict_policy() {
    let s = Arc::new(migratable());
    for (path, marker) in [("/", "/assets/js/chat.js"), ("/mesh", "/assets/js/mesh.js")] {
        let resp = raw(&s, anonymous(path)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(header_of(&resp, header::CONTENT_TYPE).starts_with("text/html"));
        let csp = header_of(&resp, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        // the page may call the mesh's other workers (it goes on there when its worker is gone)
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:8080 http://node-1;"),
            "{csp}"
        );
        assert_eq!(header_of(&resp, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header_of(&resp, header::X_FRAME_OPTIONS), "DENY");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains(marker), "{path} loads {marker}");
        assert!(
            !html.contains("<script>"),
            "no inline script (the policy forbids it)"
        );
    }
}

#[tokio::test]
async fn assets_carry_their_type_and_are_revalidated_by_hash() {
    let s = Arc::new(migratable());
    let resp = raw(&s, anonymous("/assets/js/chat.js")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, header::CONTENT_TYPE), "text/javascript");
    assert_eq!(header_of(&resp, header::CACHE_CONTROL), "no-cache");
    let etag = header_of(&resp, header::ETAG);
    assert!(etag.len() > 10 && etag.starts_with('"'), "{etag}");
    let again = Request::get("/assets/js/chat.js")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .expect("request");
    let resp = raw(&s, again).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header_of(&raw(&s, anonymous("/assets/app.css")).await, header::CONTENT_TYPE),
        "text/css"
    );
    for missing in ["/assets/nope.js", "/assets/index.html", "/assets/../Cargo.toml"] {
        let (status, body) = call(&s, anonymous(missing)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
    }
}

#[tokio::test]
async fn endpoints_list_the_workers_serving_clients_to_any_signed_in_caller() {
    let s = Arc::new(migratable());
    let (status, body) = call(&s, get_as("k-u", "/api/endpoints")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // node-1 was last heard 9 s ago (timeout 5 s): not listed
    assert_eq!(
        body,
        json!({"endpoints": [{"nodeId": "node-0", "url": "http://127.0.0.1:8080"}]})
    );
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method("OPTIONS")
        .uri("/api/chat/send")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,idempotency-key",
        )
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn only_the_meshs_own_workers_may_call_across_origins() {
    let s = Arc::new(migratable());
    // a worker of the mesh, even one not heard from lately (the page may come from it)
    for origin in ["http://127.0.0.1:8080", "http://node-1"] {
        let resp = raw(&s, preflight(origin)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{origin}");
        assert_eq!(header_of(&resp, header::ACCESS_CONTROL_ALLOW_ORIGIN), origin);
        let allowed = header_of(&resp, header::ACCESS_CONTROL_ALLOW_HEADERS);
        assert!(
            allowed.contains("idempotency-key") && allowed.contains("authorization"),
            "{allowed}"
        );
    }
    let resp = raw(&s, preflight("http://evil.example")).await;
    assert_eq!(header_of(&resp, header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
    // an actual call from an allowed origin can read Retry-After
    let call = Request::get("/api/agent/status")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header("authorization", "Bearer k-u")
        .body(Body::empty())
        .expect("request");
    let resp = raw(&s, call).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header_of(&resp, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "http://127.0.0.1:8080"
    );
    assert_eq!(
        header_of(&resp, header::ACCESS_CONTROL_EXPOSE_HEADERS),
        "retry-after"
    );
}

#[tokio::test]
async fn the_mesh_shows_load_over_time_and_moves_with_their_pause() {
    let s = Arc::new(migratable());
    let (_, body) = call(&s, get("/api/mesh")).await;
    let node0 = body["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == "node-0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(node0["history"], json!([[1000.0, 0.25, 2.0], [6000.0, 0.5, 4.0]]));
    assert_eq!(body["moves"].as_array().map(Vec::len), Some(1), "{body}");
    let m = &body["moves"][0];
    assert_eq!(
        (
            &m["partition"],
            &m["from"],
            &m["to"],
            &m["reason"],
            &m["state"],
            &m["pauseMs"]
        ),
        (
            &json!(3),
            &json!("node-1"),
            &json!("node-0"),
            &json!("requested"),
            &json!("done"),
            &json!(250)
        )
    );
}
