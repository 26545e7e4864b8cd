//! The internal listener: probes and metrics, the drain (loopback or the mesh secret only, and
//! undoable), peers' forwarded reads (the mesh secret when one is set; never forwarded again),
//! and none of it on the public port.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;

use super::*;

const PEER: &str = "10.0.0.7:40000";
const LOOPBACK: &str = "127.0.0.1:40000";

/// Calls the internal router as a client at `from` would.
async fn call_internal(service: &Arc<Fake>, mut req: Request<Body>, from: &str) -> (StatusCode, Value) {
    let addr: SocketAddr = from.parse().expect("address");
    req.extensions_mut().insert(ConnectInfo(addr));
    let resp = internal_app(service.clone())
        .oneshot(req)
        .await
        .expect("a response");
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            resp.headers().contains_key("www-authenticate"),
            "a 401 says how to authenticate"
        );
    }
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn with_secret(mut req: Request<Body>, secret: &str) -> Request<Body> {
    let value = format!("Bearer {secret}").parse().expect("header");
    req.headers_mut().insert("authorization", value);
    req
}

fn secret_fake() -> Fake {
    let mut f = fake();
    f.settings.mesh_secret = Some("s3cret-mesh".into());
    f
}

#[tokio::test]
async fn the_public_port_serves_none_of_the_internal_routes() {
    let s = Arc::new(fake());
    for path in [
        "/drain",
        "/healthz",
        "/readyz",
        "/metrics",
        "/internal/conversation/c",
    ] {
        let (status, body) = call(&s, get(path)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
        let (status, _) = call(&s, post(path, json!({}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "POST {path}");
    }
    assert!(s.drains.lock().expect("lock").is_empty(), "nothing drained");
}

#[tokio::test]
async fn probes_and_metrics_answer_anyone_who_reaches_the_port() {
    let s = Arc::new(fake());
    let (status, _) = call_internal(&s, get("/healthz"), PEER).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call_internal(&s, get("/readyz"), PEER).await;
    assert_eq!((status, body["ready"].as_bool()), (StatusCode::OK, Some(true)));
    let mut f = fake();
    f.readiness.caught_up = false;
    let (status, body) = call_internal(&Arc::new(f), get("/readyz"), PEER).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["caughtUp"], false);
    let resp = internal_app(s.clone())
        .oneshot(get("/metrics"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _) = call_internal(&s, get("/api/chat/conversation/c"), PEER).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no client routes on the internal port"
    );
}

#[tokio::test]
async fn only_the_pod_itself_or_the_mesh_secret_can_drain() {
    let s = Arc::new(secret_fake());
    // from another host, without or with a wrong secret: refused, nothing drained
    for req in [
        get("/drain"),
        post("/drain", json!({})),
        with_secret(get("/drain"), "wrong"),
        with_secret(get("/drain"), "s3cret-mesh-but-longer"),
        Request::delete("/drain").body(Body::empty()).expect("request"),
    ] {
        let (status, body) = call_internal(&s, req, PEER).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
    }
    // no connection info at all counts as not loopback
    let resp = internal_app(s.clone())
        .oneshot(get("/drain"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(s.drains.lock().expect("lock").is_empty());
    // from inside the pod (the preStop hook's exec), or with the secret
    let (status, body) = call_internal(&s, get("/drain"), LOOPBACK).await;
    assert_eq!(
        (status, body["drained"].as_str()),
        (StatusCode::OK, Some("handedOver"))
    );
    let (status, _) = call_internal(&s, with_secret(post("/drain", json!({})), "s3cret-mesh"), PEER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*s.drains.lock().expect("lock"), vec!["drain", "drain"]);
    // without a mesh secret configured, only loopback
    let open = Arc::new(fake());
    let (status, _) = call_internal(&open, with_secret(get("/drain"), ""), PEER).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_drain_sigterm_did_not_follow_can_be_undone() {
    let s = Arc::new(fake());
    let undo = || Request::delete("/drain").body(Body::empty()).expect("request");
    let (status, body) = call_internal(&s, undo(), LOOPBACK).await;
    assert_eq!(
        (status, body["draining"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    assert_eq!(*s.drains.lock().expect("lock"), vec!["undo"]);
    let mut f = fake();
    f.stopping = true;
    let (status, body) = call_internal(&Arc::new(f), undo(), LOOPBACK).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("SIGTERM")),
        "{body}"
    );
}

#[tokio::test]
async fn a_forwarded_read_needs_the_secret_and_is_never_forwarded_again() {
    let mut f = secret_fake();
    f.local
        .insert("acme/here".into(), Local::Found(conversation("here")));
    f.local.insert("gone".into(), Local::Missing);
    f.owners.insert("acme/moved".into(), owner("node-2"));
    f.log = Ok(Some(conversation("moved")));
    let s = Arc::new(f);
    let read = |key: &str| get(&format!("/internal/conversation/{key}"));
    for req in [read("acme/here"), with_secret(read("acme/here"), "nope")] {
        let (status, _) = call_internal(&s, req, LOOPBACK).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "loopback is no credential for reads"
        );
    }
    let (status, body) = call_internal(&s, with_secret(read("acme/here"), "s3cret-mesh"), PEER).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("here")));
    let (status, _) = call_internal(&s, with_secret(read("gone"), "s3cret-mesh"), PEER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // the partition moved on meanwhile: the log, never another hop
    let (status, body) = call_internal(&s, with_secret(read("acme/moved"), "s3cret-mesh"), PEER).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("moved")));
    assert!(s.forwarded.lock().expect("lock").is_empty());
    assert_eq!(*s.log_reads.lock().expect("lock"), vec!["acme/moved"]);
    let (status, body) = call_internal(&s, with_secret(read("acme/bad%20id"), "s3cret-mesh"), PEER).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    // without a secret configured, the network alone guards it
    let mut open = fake();
    open.local.insert("c".into(), Local::Found(conversation("c")));
    let (status, _) = call_internal(&Arc::new(open), read("c"), PEER).await;
    assert_eq!(status, StatusCode::OK);
}
