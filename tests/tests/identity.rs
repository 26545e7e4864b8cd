//! Identity and tenants on real workers and a real broker: every public route wants a valid
//! credential and writes nothing without one; roles limit what a credential may do; tenants
//! never see each other's conversations over REST, WebSocket or SSE, on the worker that owns
//! a conversation or on one that forwards; API keys, JWTs (HS256, RS256, ES256), tickets and
//! the WebSocket subprotocol all authenticate; keys rotate without a restart; no credential
//! reaches a log.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use meshchat_tests::auth::{self, api_key, claims, jwt, sign};
use meshchat_tests::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const T: Duration = Duration::from_secs(30);
/// Topics a refused request must leave alone (chat.events carries heartbeats every second).
const TOPICS: [&str; 5] = [
    "chat.messages",
    "chat.users",
    "chat.conversations",
    "chat.stream",
    "chat.assignments",
];

/// Two workers splitting 4 partitions statically, each forwarding reads of the other's.
async fn two_workers(
    test: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<(String, String, FakeLlm, Vec<Worker>)> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix(test);
    let llm = FakeLlm::start(&["--token-latency-ms", "2"]).await?;
    let mut env = vec![("MESHCHAT_PARTITIONS", "4")];
    env.extend_from_slice(extra);
    let workers = start_static(&prefix, &bootstrap, &llm.url, &["0-1", "2-3"], &env).await?;
    Ok((bootstrap, prefix, llm, workers))
}

async fn offsets(bootstrap: &str, prefix: &str) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut all = Vec::new();
    for t in TOPICS {
        all.push(end_offsets(bootstrap, &format!("{prefix}{t}")).await?);
    }
    Ok(all)
}

/// Waits until `token` reads a reply to `message` in conversation `id` on `base`.
async fn wait_reply_as(base: &str, token: &str, id: &str, message: &str) -> anyhow::Result<Value> {
    wait_for(&format!("reply to {message}"), T, || async {
        let (status, conv) = conversation_as(base, token, id).await.ok()?;
        (status == 200).then_some(())?;
        reply_to(&conv, message).is_some().then_some(conv)
    })
    .await
}

/// The HTTP status of a WebSocket handshake (101 when it succeeded).
async fn ws_status(base: &str, query: &str, token: Option<&str>) -> anyhow::Result<u16> {
    Ok(
        match tokio_tungstenite::connect_async(ws_request(base, query, token)?).await {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => return Err(e.into()),
        },
    )
}

/// Fails if any worker's log holds one of `secrets`.
fn assert_no_secrets(workers: &[Worker], secrets: &[String]) {
    for w in workers {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        assert!(!log.is_empty(), "{} has a log", w.spec.node_id);
        for s in secrets {
            assert!(
                !log.contains(s.as_str()),
                "{} logged a credential ({:.12}…)",
                w.spec.node_id,
                s
            );
        }
    }
    println!(
        "logs of {} workers hold none of {} test credentials",
        workers.len(),
        secrets.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_public_route_refuses_bad_credentials_and_writes_nothing() -> anyhow::Result<()> {
    let (bootstrap, prefix, _llm, workers) = two_workers("authn", &[]).await?;
    let alice = jwt("acme", "alice", "user");
    // a conversation of acme's that exists
    let id = send_as(&workers[0].url, &alice, "only-acme", "alice", "hello").await?;
    wait_reply_as(&workers[0].url, &alice, "only-acme", &id).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // snapshots and commits settle
    let before = offsets(&bootstrap, &prefix).await?;

    let now = jsonwebtoken::get_current_timestamp();
    let mut expired = claims("acme", "alice", "admin");
    expired["exp"] = json!(now - 3600);
    let mut wrong_aud = claims("acme", "alice", "admin");
    wrong_aud["aud"] = json!("another-service");
    let mut wrong_iss = claims("acme", "alice", "admin");
    wrong_iss["iss"] = json!("https://evil.test");
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("a bad token", Some("not-a-credential".into())),
        ("an expired JWT", Some(sign(Algorithm::RS256, &expired))),
        ("a wrong audience", Some(sign(Algorithm::RS256, &wrong_aud))),
        ("a wrong issuer", Some(sign(Algorithm::ES256, &wrong_iss))),
    ];
    let routes: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/api/chat/send".into(),
            json!({"conversationId": "only-acme", "content": "x"}),
        ),
        ("GET", "/api/chat/conversation/only-acme".into(), Value::Null),
        (
            "GET",
            "/api/chat/conversation/only-acme/events".into(),
            Value::Null,
        ),
        ("GET", "/api/agent/status".into(), Value::Null),
        (
            "POST",
            "/api/agent/migrate".into(),
            json!({"targetNode": "node-1"}),
        ),
        ("GET", "/api/mesh".into(), Value::Null),
        ("POST", "/api/auth/ticket".into(), Value::Null),
    ];
    let call = |method: &str, url: String, body: &Value, token: Option<&str>| {
        let mut r = if method == "POST" {
            http().post(url).json(body)
        } else {
            http().get(url)
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await }
    };
    let mut checked = 0;
    for w in &workers {
        for (method, path, body) in &routes {
            for (what, token) in &bad {
                let resp = call(method, format!("{}{path}", w.url), body, token.as_deref()).await?;
                assert_eq!(resp.status(), 401, "{method} {path} with {what}");
                assert!(
                    resp.headers().contains_key("www-authenticate"),
                    "{path}: challenge"
                );
                let err: Value = resp.json().await?;
                assert_eq!(
                    err["message"], "a valid bearer credential is required",
                    "says nothing more"
                );
                checked += 1;
            }
        }
        for (what, token) in &bad {
            let status = ws_status(&w.url, "conversationId=only-acme", token.as_deref()).await?;
            assert_eq!(status, 401, "WebSocket with {what}");
            checked += 1;
        }
        // valid credentials, not allowed: users and admins on what they may not do
        let user_routes = [
            ("GET", "/api/mesh", Value::Null, alice.clone(), 403),
            (
                "POST",
                "/api/agent/migrate",
                json!({"targetNode": "node-1"}),
                alice.clone(),
                403,
            ),
            (
                "POST",
                "/api/agent/migrate",
                json!({"targetNode": "node-1"}),
                jwt("acme", "boss", "admin"),
                403,
            ),
            (
                "POST",
                "/api/chat/send",
                json!({"conversationId": "c", "content": "x"}),
                auth::operator(),
                403,
            ),
            // another tenant's credential: the conversation does not exist for it
            (
                "GET",
                "/api/chat/conversation/only-acme",
                Value::Null,
                jwt("globex", "carol", "user"),
                404,
            ),
            (
                "GET",
                "/api/chat/conversation/only-acme",
                Value::Null,
                jwt("globex", "gadmin", "admin"),
                404,
            ),
            (
                "GET",
                "/api/chat/conversation/only-acme/events",
                Value::Null,
                jwt("acme", "bob", "user"),
                404,
            ),
            // another user of the same tenant
            (
                "GET",
                "/api/chat/conversation/only-acme",
                Value::Null,
                jwt("acme", "bob", "user"),
                404,
            ),
            (
                "POST",
                "/api/chat/send",
                json!({"conversationId": "only-acme", "content": "x"}),
                jwt("acme", "bob", "user"),
                404,
            ),
        ];
        for (method, path, body, token, want) in user_routes {
            let resp = call(method, format!("{}{path}", w.url), &body, Some(&token)).await?;
            assert_eq!(
                resp.status().as_u16(),
                want,
                "{method} {path} on {}",
                w.spec.node_id
            );
            checked += 1;
        }
        let status = ws_status(
            &w.url,
            "conversationId=only-acme",
            Some(&jwt("acme", "bob", "user")),
        )
        .await?;
        assert_eq!(status, 404, "another user's conversation over a WebSocket");
        // for another tenant the id is simply unused: watching it is what watching any new id
        // is (a user may watch a conversation it is about to start), and shows nothing of acme's
        for id in ["only-acme", "never-used"] {
            let status = ws_status(
                &w.url,
                &format!("conversationId={id}"),
                Some(&jwt("globex", "carol", "user")),
            )
            .await?;
            assert_eq!(status, 101, "globex watching {id}");
        }
        // the public port serves none of the internal routes, and the worker keeps serving
        for path in [
            "/drain",
            "/healthz",
            "/readyz",
            "/metrics",
            "/internal/conversation/acme/only-acme",
        ] {
            let resp = http()
                .get(format!("{}{path}", w.url))
                .bearer_auth(&alice)
                .send()
                .await?;
            assert_eq!(resp.status(), 404, "public {path}");
        }
        let (status, _) = conversation_as(&w.url, &alice, "only-acme").await?;
        assert_eq!(status, 200, "still serving");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = offsets(&bootstrap, &prefix).await?;
    assert_eq!(before, after, "refused requests wrote nothing to {TOPICS:?}");
    println!("{checked} refused requests over 2 workers; topic end offsets unchanged");

    let mut secrets = vec![alice.clone(), MESH_SECRET.to_string()];
    secrets.extend(bad.into_iter().filter_map(|(_, t)| t));
    assert_no_secrets(&workers, &secrets);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_never_see_each_other_over_rest_websocket_or_sse() -> anyhow::Result<()> {
    let (bootstrap, prefix, _llm, workers) = two_workers("tenants", &[]).await?;
    let (alice, carol) = (jwt("acme", "alice", "user"), jwt("globex", "carol", "user"));
    let id = "same-id";
    // the same id under two tenants is two conversations, on their own partitions
    let owner_of =
        |tenant: &str| usize::from(meshchat_wire::partition_for(&format!("{tenant}/{id}"), 4) >= 2);
    println!(
        "acme/{id} is owned by node-{}, globex/{id} by node-{}",
        owner_of("acme"),
        owner_of("globex")
    );
    // watchers on both workers (one owns, the other forwards), opened before either exists:
    // a user may watch a conversation it is about to start
    let mut watchers = Vec::new();
    for w in &workers {
        for (tenant, token) in [("acme", &alice), ("globex", &carol)] {
            let ws = connect_ws_as(&w.url, &format!("conversationId={id}"), Some(token)).await?;
            let sse = connect_sse_as(&w.url, id, Some(token)).await?;
            watchers.push((tenant, w.spec.node_id.clone(), ws, sse));
        }
    }
    let a = send_as(&workers[0].url, &alice, id, "carol", "acme's secret plan").await?;
    let g = send_as(&workers[1].url, &carol, id, "alice", "globex's secret plan").await?;
    wait_reply_as(&workers[1].url, &alice, id, &a).await?;
    wait_reply_as(&workers[0].url, &carol, id, &g).await?;

    for (tenant, node, ws, sse) in &watchers {
        let (mine, theirs, mine_text, their_text) = if *tenant == "acme" {
            (&a, &g, "acme's", "globex's")
        } else {
            (&g, &a, "globex's", "acme's")
        };
        for (kind, client) in [("ws", ws), ("sse", sse)] {
            client
                .wait(&format!("{tenant} {kind}@{node} reply"), T, |e| {
                    e["type"] == "reply" && e["message"]["inReplyTo"] == mine.as_str()
                })
                .await?;
            let events = client.events();
            let text = serde_json::to_string(&events)?;
            assert!(
                text.contains(mine_text),
                "{tenant} {kind}@{node} sees its own message"
            );
            assert!(
                !text.contains(their_text),
                "{tenant} {kind}@{node} saw the other tenant's text"
            );
            assert!(
                !text.contains(theirs.as_str()),
                "{tenant} {kind}@{node} saw the other tenant's id"
            );
        }
    }
    // REST on both workers: each tenant reads its own; the sender is the caller, not the body
    for w in &workers {
        for (token, mine, user, their_text) in
            [(&alice, &a, "alice", "globex's"), (&carol, &g, "carol", "acme's")]
        {
            let (status, conv) = conversation_as(&w.url, token, id).await?;
            assert_eq!(status, 200);
            let text = conv.to_string();
            assert!(
                text.contains(mine.as_str()) && !text.contains(their_text),
                "{}: {text}",
                w.spec.node_id
            );
            assert_eq!(conv["participants"][0], user, "sender from the credential");
        }
        // acme's other user, acme's admin
        let (status, _) = conversation_as(&w.url, &jwt("acme", "bob", "user"), id).await?;
        assert_eq!(status, 404);
        let (status, conv) = conversation_as(&w.url, &jwt("acme", "boss", "admin"), id).await?;
        assert_eq!(status, 200);
        assert!(!conv.to_string().contains("globex's"));
        assert_eq!(
            ws_status(
                &w.url,
                &format!("conversationId={id}"),
                Some(&jwt("acme", "bob", "user"))
            )
            .await?,
            404
        );
    }
    // a user joins a conversation when one of its participants adds it
    let bob = jwt("acme", "bob", "user");
    let added = http()
        .post(format!(
            "{}/api/chat/conversation/{id}/participants",
            workers[1].url
        ))
        .bearer_auth(&alice)
        .json(&json!({"userId": "bob"}))
        .send()
        .await?;
    assert_eq!(added.status(), 200, "alice adds bob");
    let globex_add = http()
        .post(format!(
            "{}/api/chat/conversation/{id}/participants",
            workers[0].url
        ))
        .bearer_auth(jwt("globex", "gadmin", "admin"))
        .json(&json!({"userId": "mallory"}))
        .send()
        .await?;
    assert_eq!(
        globex_add.status(),
        200,
        "globex's admin adds to globex's own same-id"
    );
    for w in &workers {
        wait_for("bob to see acme's conversation", T, || async {
            let (status, conv) = conversation_as(&w.url, &bob, id).await.ok()?;
            (status == 200 && conv["participants"].to_string().contains("bob")).then_some(())
        })
        .await?;
    }
    let b = send_as(&workers[0].url, &bob, id, "ignored", "bob is here").await?;
    wait_reply_as(&workers[1].url, &bob, id, &b).await?;
    let (_, globex_view) = conversation_as(&workers[0].url, &carol, id).await?;
    assert!(
        !globex_view.to_string().contains("bob"),
        "acme's participant is not globex's: {globex_view}"
    );

    // and in the log: two keys, tenants recorded
    let log = read_topic(&bootstrap, &format!("{prefix}chat.messages")).await?;
    let keys: std::collections::BTreeSet<&str> = log
        .iter()
        .filter(|r| r.value["type"] == "userMessage")
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(keys, ["acme/same-id", "globex/same-id"].into_iter().collect());
    println!("tenants isolated over REST, WebSocket and SSE on the owner and the forwarder");
    assert_no_secrets(&workers, &[alice, carol, MESH_SECRET.to_string()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_credential_works_and_keys_rotate_without_a_restart() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique_prefix("keys"));
    std::fs::create_dir_all(&dir)?;
    let keys_file = dir.join("keys.json");
    let write_keys = |keys: &[&str]| {
        let entries: Vec<Value> = keys
            .iter()
            .map(
                |k| json!({"tenant": "acme", "user": "alice", "role": "user", "sha256": auth::sha256_hex(k)}),
            )
            .collect();
        std::fs::write(&keys_file, json!({"keys": entries}).to_string())
    };
    write_keys(&["first-key-8c1d"])?;
    let file = keys_file.to_string_lossy().to_string();
    let (_bootstrap, _prefix, _llm, workers) =
        two_workers("creds", &[("MESHCHAT_API_KEYS_FILE", &file)]).await?;
    let status_with = |token: String| {
        let url = format!("{}/api/agent/status", workers[0].url);
        async move {
            let r = http().get(url).bearer_auth(token).send().await?;
            anyhow::Ok(r.status().as_u16())
        }
    };
    let c = claims("acme", "alice", "user");
    for (what, token) in [
        ("API key", "first-key-8c1d".to_string()),
        ("HS256", sign(Algorithm::HS256, &c)),
        ("RS256", sign(Algorithm::RS256, &c)),
        ("ES256", sign(Algorithm::ES256, &c)),
    ] {
        assert_eq!(status_with(token).await?, 200, "{what}");
    }
    // rotation: add a key, move to it, remove the old one — no restart
    write_keys(&["first-key-8c1d", "second-key-77ae"])?;
    wait_for("the new key", T, || async {
        (status_with("second-key-77ae".into()).await.ok()? == 200).then_some(())
    })
    .await?;
    write_keys(&["second-key-77ae"])?;
    wait_for("the old key refused", T, || async {
        (status_with("first-key-8c1d".into()).await.ok()? == 401).then_some(())
    })
    .await?;
    assert_eq!(status_with("second-key-77ae".into()).await?, 200);

    // a browser's live stream: a ticket in the URL (from either worker: they share the mesh key)
    let key = "second-key-77ae";
    let ticket: Value = http()
        .post(format!("{}/api/auth/ticket", workers[0].url))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().unwrap_or_default().to_string();
    let resp = http()
        .get(format!(
            "{}/api/chat/conversation/tk/events?ticket={ticket}",
            workers[1].url
        ))
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "SSE with a ticket on the other worker");
    drop(resp);
    let resp = http()
        .get(format!(
            "{}/api/chat/conversation/tk/events?ticket={key}",
            workers[1].url
        ))
        .send()
        .await?;
    assert_eq!(resp.status(), 401, "an API key is never taken from the URL");
    // ... or the token as a WebSocket subprotocol
    let mut request = ws_request(&workers[0].url, "conversationId=tk", None)?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("meshchat, meshchat.bearer.{key}").parse()?,
    );
    let (_socket, resp) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("meshchat")
    );
    println!("API key, HS256, RS256, ES256, ticket and subprotocol accepted; keys rotated live");

    // --auth none says so loudly
    let llm = FakeLlm::start(&[]).await?;
    let open = Worker::start(
        WorkerSpec::new("open", &unique_prefix("open"), &broker().await?, &llm.url)?
            .env("MESHCHAT_AUTH", "none"),
    )
    .await?;
    let status: Value = http()
        .get(format!("{}/api/agent/status", open.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(status["auth"], "none");
    assert!(std::fs::read_to_string(&open.log)?.contains("authentication is disabled (--auth none)"));

    let mut secrets = vec!["first-key-8c1d".to_string(), key.to_string(), ticket];
    secrets.push(api_key("acme", "alice", "user"));
    assert_no_secrets(&workers, &secrets);
    Ok(())
}
