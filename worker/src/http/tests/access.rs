//! Who may call what: credentials, roles and tenants on every public route.

use super::*;

/// Every public route, as `(method, path, body)`.
fn routes() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "POST",
            "/api/chat/send",
            json!({"conversationId": "c", "content": "x"}),
        ),
        ("GET", "/api/chat/conversation/c", Value::Null),
        ("GET", "/api/chat/conversation/c/events", Value::Null),
        ("GET", "/api/chat/ws?conversationId=c", Value::Null),
        ("GET", "/api/agent/status", Value::Null),
        ("POST", "/api/agent/migrate", json!({"targetNode": "node-1"})),
        ("GET", "/api/mesh", Value::Null),
        ("GET", "/api/endpoints", Value::Null),
        ("POST", "/api/auth/ticket", Value::Null),
        (
            "POST",
            "/api/chat/conversation/c/participants",
            json!({"userId": "x"}),
        ),
        ("POST", "/api/chat/conversation/c/cancel", Value::Null),
        ("DELETE", "/api/chat/conversation/c", Value::Null),
        ("GET", "/api/chat/conversations", Value::Null),
        ("GET", "/api/chat/conversation/c?limit=5", Value::Null),
    ]
}

fn request(method: &str, path: &str, body: &Value, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    b.body(body).expect("request")
}

#[tokio::test]
async fn every_public_route_wants_a_valid_credential_and_says_nothing_more() {
    let s = Arc::new(migratable());
    for (method, path, body) in routes() {
        for auth in [
            None,
            Some("Bearer "),
            Some("Bearer not-a-key"),
            Some("Basic azphZG1pbg=="),
            Some("k-admin"),
            Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"),
        ] {
            let resp = app(s.clone())
                .oneshot(request(method, path, &body, auth))
                .await
                .expect("response");
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(
                resp.headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some(r#"Bearer realm="meshchat""#),
                "{method} {path}"
            );
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            let err: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(err["error"], "unauthorized");
            assert_eq!(err["message"], "a valid bearer credential is required");
        }
    }
    assert!(s.appended.lock().expect("lock").is_empty());
    assert!(s.migrations.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn roles_limit_what_a_valid_credential_may_do() {
    let s = Arc::new(migratable());
    let cases = [
        ("k-u", "GET", "/api/mesh", StatusCode::FORBIDDEN),
        ("k-u", "POST", "/api/agent/migrate", StatusCode::FORBIDDEN),
        ("k-alice", "GET", "/api/mesh", StatusCode::FORBIDDEN),
        ("k-op", "POST", "/api/chat/send", StatusCode::FORBIDDEN),
        ("k-op", "GET", "/api/chat/conversation/c", StatusCode::FORBIDDEN),
        (
            "k-op",
            "GET",
            "/api/chat/conversation/c/events",
            StatusCode::FORBIDDEN,
        ),
        // an admin moves its tenant's conversations, not partitions or workers
        ("k-admin", "POST", "/api/agent/migrate", StatusCode::FORBIDDEN),
        ("k-u", "GET", "/api/agent/status", StatusCode::OK),
        ("k-admin", "GET", "/api/mesh", StatusCode::OK),
        ("k-op", "GET", "/api/mesh", StatusCode::OK),
    ];
    for (token, method, path, want) in cases {
        let body = match path {
            "/api/chat/send" => json!({"conversationId": "c", "content": "x"}),
            "/api/agent/migrate" => json!({"targetNode": "node-1"}),
            _ => Value::Null,
        };
        let req = request(method, path, &body, Some(&format!("Bearer {token}")));
        let (status, err) = call(&s, req).await;
        assert_eq!(status, want, "{token} {method} {path}: {err}");
        if want == StatusCode::FORBIDDEN {
            assert_eq!(err["error"], "forbidden");
        }
    }
    assert!(s.appended.lock().expect("lock").is_empty());
    assert!(s.migrations.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_user_sees_and_posts_to_its_own_conversations_only() {
    let mut f = fake();
    let mut mine = conversation("mine");
    mine.participants = vec!["u".into()];
    f.local.insert("mine".into(), Local::Found(mine.clone()));
    f.local
        .insert("theirs".into(), Local::Found(conversation("theirs")));
    f.members
        .insert(("theirs".into(), "u".into()), Membership::Stranger);
    f.members.insert(("mine".into(), "u".into()), Membership::Member);
    if let Some(Local::Found(v)) = f.local.get_mut("theirs") {
        v.participants = vec!["v".into()];
    }
    let s = Arc::new(f);
    let (status, body) = call(&s, get_as("k-u", "/api/chat/conversation/mine")).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("mine")));
    // another user's conversation of the same tenant: as if it did not exist
    let (status, body) = call(&s, get_as("k-u", "/api/chat/conversation/theirs")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = call(&s, get_as("k-u", "/api/chat/conversation/theirs/events")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let send = |conv: &str| json!({"conversationId": conv, "userId": "v", "content": "x"});
    let (status, _) = call(&s, post_as("k-u", "/api/chat/send", send("theirs"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // the admin sees it; the user posts to its own and to new conversations, as itself
    let (status, _) = call(&s, get("/api/chat/conversation/theirs")).await;
    assert_eq!(status, StatusCode::OK);
    for conv in ["mine", "brand-new"] {
        let (status, body) = call(&s, post_as("k-u", "/api/chat/send", send(conv))).await;
        assert_eq!(status, StatusCode::OK, "{conv}: {body}");
    }
    let appended = s.appended.lock().expect("lock").clone();
    let senders: Vec<(&str, &str)> = appended
        .iter()
        .map(|m| (m.conversation_id.as_str(), m.user_id.as_str()))
        .collect();
    assert_eq!(
        senders,
        vec![("mine", "u"), ("brand-new", "u")],
        "userId in the body is ignored"
    );
    // watching a conversation that does not exist yet is allowed (it is about to be started)
    let (status, _) = call(&s, get_as("k-u", "/api/chat/conversation/not-yet/events")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn participants_are_added_by_a_participant_or_the_tenant_admin() {
    let mut f = fake();
    f.members.insert(("mine".into(), "u".into()), Membership::Member);
    f.members
        .insert(("mine".into(), "root".into()), Membership::Stranger);
    f.members
        .insert(("mine".into(), "v".into()), Membership::Stranger);
    f.members
        .insert(("acme/mine".into(), "boss".into()), Membership::Missing);
    let s = Arc::new(f);
    let add = |token: &str, conv: &str, user: &str| {
        post_as(
            token,
            &format!("/api/chat/conversation/{conv}/participants"),
            json!({"userId": user}),
        )
    };
    let (status, body) = call(&s, add("k-u", "mine", "v")).await;
    assert_eq!(status, StatusCode::OK, "a participant adds another: {body}");
    assert_eq!(
        (body["userId"].as_str(), body["addedBy"].as_str()),
        (Some("v"), Some("u"))
    );
    let (status, _) = call(&s, add("k-admin", "mine", "w")).await;
    assert_eq!(status, StatusCode::OK, "the tenant's admin adds anyone");
    let cases = [
        (
            add("k-v", "mine", "v"),
            StatusCode::NOT_FOUND,
            "a stranger cannot add itself",
        ),
        (
            add("k-admin", "nope", "v"),
            StatusCode::NOT_FOUND,
            "the conversation must exist",
        ),
        (
            add("k-acme-admin", "mine", "v"),
            StatusCode::NOT_FOUND,
            "another tenant's admin",
        ),
        (
            add("k-op", "mine", "v"),
            StatusCode::FORBIDDEN,
            "the operator reads no conversation",
        ),
        (
            add("k-u", "mine", "bad id"),
            StatusCode::BAD_REQUEST,
            "userId is checked",
        ),
    ];
    for (req, want, what) in cases {
        let (status, _) = call(&s, req).await;
        assert_eq!(status, want, "{what}");
    }
    let added: Vec<(String, String, String)> = s
        .records
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|r| match r {
            meshchat_wire::ChatRecord::ParticipantAdded(p) => {
                Some((p.conversation_id.clone(), p.user_id.clone(), p.added_by.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        added,
        vec![
            ("mine".into(), "v".into(), "u".into()),
            ("mine".into(), "w".into(), "root".into())
        ]
    );
}

#[tokio::test]
async fn tenants_are_namespaces_and_a_foreign_id_is_not_found() {
    let mut f = fake();
    // "c" of the default tenant exists; acme's "c" is another conversation (key acme/c)
    f.local.insert("c".into(), Local::Found(conversation("c")));
    f.local.insert("acme/c".into(), Local::Missing);
    let s = Arc::new(f);
    let (status, _) = call(&s, get_as("k-acme-admin", "/api/chat/conversation/c")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "acme's admin does not see default's c"
    );
    let (status, _) = call(&s, get("/api/chat/conversation/c")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &s,
        post_as(
            "k-alice",
            "/api/chat/send",
            json!({"conversationId": "c", "content": "hi"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let m = s.appended.lock().expect("lock")[0].clone();
    assert_eq!(
        (m.tenant.as_str(), m.conversation_id.as_str(), m.user_id.as_str()),
        ("acme", "c", "alice")
    );
    assert_eq!(m.key(), "acme/c");
    assert_eq!(
        *s.joined.lock().expect("lock"),
        vec![("acme/c".to_string(), "alice".to_string())]
    );
}

#[tokio::test]
async fn an_admin_migrates_its_own_conversations_within_the_rate_limit() {
    // an id whose tenant key lands on node-0's partitions (0 and 1) and whose bare id does not
    let id = (0..100)
        .map(|i| format!("c{i}"))
        .find(|id| {
            meshchat_wire::partition_for(&format!("acme/{id}"), 4) < 2
                && meshchat_wire::partition_for(id, 4) >= 2
        })
        .expect("such an id");
    let mut f = migratable();
    f.members
        .insert((format!("acme/{id}"), "boss".into()), Membership::Stranger);
    let s = Arc::new(f);
    let (status, body) = call(
        &s,
        post_as(
            "k-acme-admin",
            "/api/agent/migrate",
            json!({"targetNode": "node-1", "conversationId": id}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = s.migrations.lock().expect("lock").clone();
    let want = meshchat_wire::partition_for(&format!("acme/{id}"), 4);
    assert_eq!(
        sent[0].partitions,
        vec![want],
        "the partition of the tenant's key"
    );
    // a conversation that does not exist in the tenant
    let (status, _) = call(
        &s,
        post_as(
            "k-acme-admin",
            "/api/agent/migrate",
            json!({"targetNode": "node-1", "conversationId": "nope"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut f = migratable();
    f.admit = Err(Duration::from_millis(9_500));
    let s = Arc::new(f);
    let req = post_as("k-op", "/api/agent/migrate", json!({"targetNode": "node-1"}));
    let resp = app(s.clone()).oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("10")
    );
    assert!(s.migrations.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn live_streams_take_a_ticket_or_the_websocket_protocol_but_no_key_in_the_url() {
    let s = Arc::new(fake());
    let (status, body) = call(&s, post_as("k-u", "/api/auth/ticket", Value::Null)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["user"].as_str(), body["expiresIn"].as_u64()),
        (Some("u"), Some(60))
    );
    let ticket = body["ticket"].as_str().expect("ticket").to_string();
    let plain = |path: String| Request::get(path).body(Body::empty()).expect("request");
    let (status, _) = call(
        &s,
        plain(format!("/api/chat/conversation/c/events?ticket={ticket}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "SSE with a ticket");
    // authenticated; refused only because this is not a real WebSocket handshake
    let (status, body) = call(
        &s,
        plain(format!("/api/chat/ws?conversationId=c&ticket={ticket}")),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("upgrade"))
    );
    let req = Request::get("/api/chat/ws?conversationId=c")
        .header("sec-websocket-protocol", "meshchat, meshchat.bearer.k-u")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(&s, req).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("upgrade"))
    );
    // a long-lived key is never taken from the URL, and a ticket is no bearer token
    for path in [
        "/api/chat/conversation/c/events?ticket=k-u".to_string(),
        "/api/chat/conversation/c/events?access_token=k-u".to_string(),
        "/api/chat/conversation/c/events?token=k-u".to_string(),
    ] {
        let (status, _) = call(&s, plain(path.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = call(&s, get_as(&ticket, "/api/agent/status")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_none_takes_the_sender_from_the_body_and_says_so_on_status() {
    let mut f = fake();
    f.auth = authenticator(true);
    let s = Arc::new(f);
    let req = Request::post("/api/chat/send")
        .body(Body::from(
            json!({"conversationId": "c", "userId": "u-1", "content": "x"}).to_string(),
        ))
        .expect("request");
    let (status, _) = call(&s, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.appended.lock().expect("lock")[0].user_id, "u-1");
    let req = Request::get("/api/agent/status")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(&s, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["auth"], "none");
    assert!(
        body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("--auth none")),
        "{body}"
    );
    let (_, body) = call(&Arc::new(fake()), get("/api/agent/status")).await;
    assert_eq!(
        (body["auth"].as_str(), body["warnings"].as_array().map(Vec::len)),
        (Some("required"), Some(0))
    );
}

#[tokio::test]
async fn a_cancel_is_recorded_for_a_participant_and_the_tenant_admin_only() {
    let mut f = fake();
    f.members.insert(("mine".into(), "u".into()), Membership::Member);
    f.members
        .insert(("mine".into(), "v".into()), Membership::Stranger);
    f.members
        .insert(("mine".into(), "root".into()), Membership::Stranger);
    f.members
        .insert(("acme/mine".into(), "boss".into()), Membership::Missing);
    let s = Arc::new(f);
    let cancel = |token: &str, conv: &str| {
        post_as(
            token,
            &format!("/api/chat/conversation/{conv}/cancel"),
            Value::Null,
        )
    };
    let (status, body) = call(&s, cancel("k-u", "mine")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["message"], "Cancel requested");
    let (status, _) = call(&s, cancel("k-admin", "mine")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the tenant's admin");
    for (token, conv, why) in [
        ("k-v", "mine", "another user's conversation"),
        ("k-acme-admin", "mine", "another tenant's conversation"),
        ("k-u", "nope", "no such conversation"),
    ] {
        let (status, body) = call(&s, cancel(token, conv)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{why}: {body}");
    }
    let (status, _) = call(&s, cancel("k-op", "mine")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let recorded: Vec<(String, String, String)> = s
        .records
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|r| match r {
            meshchat_wire::ChatRecord::CancelRequest(c) => Some((
                c.tenant.clone(),
                c.conversation_id.clone(),
                c.requested_by.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        vec![
            ("default".into(), "mine".into(), "u".into()),
            ("default".into(), "mine".into(), "root".into())
        ]
    );
}

#[tokio::test]
async fn a_deletion_is_recorded_for_a_participant_and_the_tenant_admin_only() {
    let mut f = fake();
    f.members.insert(("mine".into(), "u".into()), Membership::Member);
    f.members
        .insert(("mine".into(), "v".into()), Membership::Stranger);
    f.members
        .insert(("acme/mine".into(), "boss".into()), Membership::Missing);
    f.local.insert("mine".into(), Local::Found(conversation("mine")));
    let s = Arc::new(f);
    let delete = |token: &str, conv: &str| {
        Request::delete(format!("/api/chat/conversation/{conv}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request")
    };
    for (token, conv, why) in [
        ("k-v", "mine", "another user's conversation"),
        ("k-acme-admin", "mine", "another tenant's conversation"),
        ("k-u", "nope", "no such conversation"),
    ] {
        let (status, body) = call(&s, delete(token, conv)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{why}: {body}");
    }
    let (status, _) = call(&s, delete("k-op", "mine")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        s.records.lock().expect("lock").is_empty(),
        "nothing recorded for refusals"
    );
    // a participant: recorded, and answered once the conversation is served no more
    let (status, body) = call(&s, delete("k-u", "mine")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Conversation deleted");
    let recorded: Vec<(String, String)> = s
        .records
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|r| match r {
            meshchat_wire::ChatRecord::ConversationDeleted(d) => {
                Some((d.conversation_id.clone(), d.deleted_by.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(recorded, vec![("mine".into(), "u".into())]);
    let (status, _) = call(&s, get("/api/chat/conversation/mine")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
