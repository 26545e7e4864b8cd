//! The handlers against a fake worker: bad input, error shapes, forwarding decisions and what
//! reaches the log, without Kafka. The internal listener's are in `tests/internal.rs`.

mod access;
mod internal;
mod list;
mod openai;
mod paging;
mod resume;
mod web;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use meshchat_wire::worker::Ownership;
use meshchat_wire::{AssignmentTable, LoadReport, MigrateRequest, PresenceKind, UserMessage};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::*;
use crate::auth::{ApiKeyEntry, ApiKeys, Authenticator, Role, Tickets, hash_key_hex};
use crate::drain::Drained;
use crate::limits::{LimitSettings, Limits};
use crate::live::{CatchUpError, Cursor, NotServing, Positioned, Relay};
use crate::mesh::Peer;
use crate::ownership::{Assignment, HeldPartition, OwnerInfo, Partition, Phase};
use crate::view::{ConversationView, LiveEvent};

/// A worker with canned answers that records what the handlers ask of it.
struct Fake {
    settings: HttpSettings,
    readiness: Readiness,
    append: Result<(), String>,
    appended: Mutex<Vec<UserMessage>>,
    local: BTreeMap<String, Local>,
    owners: BTreeMap<String, OwnerInfo>,
    forward: Result<Forwarded, String>,
    forwarded: Mutex<Vec<String>>,
    log: Result<Option<ConversationView>, String>,
    log_reads: Mutex<Vec<String>>,
    assignment: Assignment,
    held: BTreeMap<Partition, HeldPartition>,
    peers: BTreeMap<String, Peer>,
    migrations: Mutex<Vec<MigrateRequest>>,
    drains: Mutex<Vec<&'static str>>,
    stopping: bool,
    auth: Authenticator,
    members: BTreeMap<(String, String), Membership>,
    joined: Mutex<Vec<(String, String)>>,
    admit: Result<(), Duration>,
    /// Records other than user messages, in order.
    records: Mutex<Vec<meshchat_wire::ChatRecord>>,
    limits: Arc<Limits>,
    append_delay: Option<Duration>,
    backlog: Option<i64>,
    /// Live events handed to subscribers (none: a closed channel).
    live: Option<broadcast::Sender<Arc<Positioned>>>,
    /// What a resume reads back from the "log": these events at or after its cursor.
    stored: Vec<Positioned>,
    /// What a whole-history read of the log finds.
    history: Option<ConversationView>,
    /// The conversation index (none: still loading).
    index: Option<crate::index::ConversationIndex>,
    /// Where the public API counts its requests.
    http: crate::metrics::HttpMetrics,
}

/// The fake's credentials: `(token, tenant, user, role)`.
const KEYS: [(&str, &str, &str, Role); 6] = [
    ("k-admin", "default", "root", Role::Admin),
    ("k-op", "default", "mesh", Role::Operator),
    ("k-u", "default", "u", Role::User),
    ("k-v", "default", "v", Role::User),
    ("k-alice", "acme", "alice", Role::User),
    ("k-acme-admin", "acme", "boss", Role::Admin),
];

fn authenticator(disabled: bool) -> Authenticator {
    let entries: Vec<ApiKeyEntry> = KEYS
        .iter()
        .map(|(token, tenant, user, role)| ApiKeyEntry {
            id: None,
            tenant: (*tenant).into(),
            user: (*user).into(),
            role: *role,
            sha256: hash_key_hex(token),
        })
        .collect();
    Authenticator::from_parts(
        disabled,
        Some(ApiKeys::from_entries(&entries).expect("keys")),
        None,
        Tickets::new(Some("mesh-secret")).expect("tickets"),
    )
}

fn fake() -> Fake {
    Fake {
        settings: HttpSettings {
            node_id: "node-0".into(),
            partitions: 4,
            max_content_bytes: 64,
            ownership: Ownership::Dynamic,
            handoff_grace: Duration::from_secs(2),
            mesh_secret: None,
            model: "support".into(),
        },
        readiness: Readiness {
            kafka: true,
            caught_up: true,
            live: true,
            draining: false,
        },
        append: Ok(()),
        appended: Mutex::default(),
        local: BTreeMap::new(),
        owners: BTreeMap::new(),
        forward: Err("unreachable".into()),
        forwarded: Mutex::default(),
        log: Ok(None),
        log_reads: Mutex::default(),
        assignment: Assignment::default(),
        held: BTreeMap::new(),
        peers: BTreeMap::new(),
        migrations: Mutex::default(),
        drains: Mutex::default(),
        stopping: false,
        auth: authenticator(false),
        members: BTreeMap::new(),
        joined: Mutex::default(),
        admit: Ok(()),
        records: Mutex::default(),
        limits: Arc::new(Limits::new(LimitSettings::default())),
        append_delay: None,
        backlog: None,
        live: None,
        stored: Vec::new(),
        history: None,
        index: None,
        http: crate::metrics::HttpMetrics::default(),
    }
}

fn owner(node: &str) -> OwnerInfo {
    OwnerInfo {
        node_id: node.into(),
        internal_url: Some(format!("http://{node}")),
        epoch: 1,
        from: None,
        failover: false,
    }
}

fn conversation(id: &str) -> ConversationView {
    ConversationView {
        id: id.into(),
        participants: vec!["u".into()],
        messages: Vec::new(),
        has_more: false,
    }
}

fn report(id: &str, draining: bool) -> LoadReport {
    LoadReport {
        v: 1,
        worker_id: id.into(),
        address: format!("http://{id}"),
        internal_address: None,
        generation: 1,
        partitions: Vec::new(),
        load_factor: 0.0,
        draining,
        timestamp: OffsetDateTime::UNIX_EPOCH,
    }
}

impl ChatService for Fake {
    fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    fn auth(&self) -> &Authenticator {
        &self.auth
    }

    fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    fn backlog(&self, _key: &str) -> Option<i64> {
        self.backlog
    }

    async fn membership(&self, key: &str, user: &str) -> Result<Membership, String> {
        Ok(self
            .members
            .get(&(key.to_string(), user.to_string()))
            .copied()
            .unwrap_or(Membership::Missing))
    }

    fn local_membership(&self, _key: &str, _user: &str) -> Option<Membership> {
        None
    }

    fn joined(&self, key: &str, user: &str) {
        self.joined.lock().expect("lock").push((key.into(), user.into()));
    }

    fn admit_migration(&self, _tenant: &str) -> Result<(), Duration> {
        self.admit
    }

    async fn append_record(&self, record: meshchat_wire::ChatRecord) -> Result<(), String> {
        self.append.clone()?;
        self.records.lock().expect("lock").push(record);
        Ok(())
    }

    async fn append(&self, message: UserMessage) -> Result<(), String> {
        if let Some(d) = self.append_delay {
            tokio::time::sleep(d).await;
        }
        self.append.clone()?;
        self.appended.lock().expect("lock").push(message);
        Ok(())
    }

    async fn wake(&self, _key: &str) {}

    fn local_conversation(&self, id: &str) -> Local {
        // the fake owns what it holds: a deletion it recorded applies at once
        let deleted = self
            .records
            .lock()
            .expect("lock")
            .iter()
            .any(|r| matches!(r, meshchat_wire::ChatRecord::ConversationDeleted(_)) && r.key() == id);
        match self.local.get(id) {
            Some(_) if deleted => Local::Missing,
            found => found.cloned().unwrap_or(Local::NotHere),
        }
    }

    fn owner_of(&self, id: &str) -> Option<OwnerInfo> {
        self.owners.get(id).cloned()
    }

    async fn forward_read(&self, url: &str, id: &str) -> Result<Forwarded, String> {
        self.forwarded.lock().expect("lock").push(format!("{url}/{id}"));
        self.forward.clone()
    }

    async fn read_log(&self, id: &str) -> Result<Option<ConversationView>, String> {
        self.log_reads.lock().expect("lock").push(id.into());
        self.log.clone()
    }

    fn list_conversations(
        &self,
        tenant: &str,
        user: Option<&str>,
        after: Option<crate::index::ListCursor>,
        limit: usize,
    ) -> Result<crate::index::Page, IndexLoading> {
        match &self.index {
            Some(i) => Ok(i.list(tenant, user, after, limit)),
            None => Err(IndexLoading),
        }
    }

    async fn read_history(&self, id: &str) -> Result<Option<ConversationView>, String> {
        self.log_reads.lock().expect("lock").push(format!("history:{id}"));
        Ok(self.history.clone())
    }

    async fn subscribe(
        &self,
        _conversation: &str,
    ) -> Result<(broadcast::Receiver<Arc<Positioned>>, Cursor), NotServing> {
        let rx = match &self.live {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        };
        Ok((rx, Cursor::default()))
    }

    async fn relay(&self, url: &str, _key: &str, _after: Option<Cursor>) -> Result<Relay, String> {
        Err(format!("no worker at {url} here"))
    }

    async fn catch_up(&self, _conversation: &str, from: Cursor) -> Result<Vec<Positioned>, CatchUpError> {
        let end = Cursor {
            messages: 1000,
            stream: 1000,
            users: 1000,
        };
        if !from.within(&end) {
            return Err(CatchUpError::Beyond { cursor: from, end });
        }
        Ok(self
            .stored
            .iter()
            .filter(|e| e.pos.offset >= from.get(e.pos.topic))
            .cloned()
            .collect())
    }

    fn presence(&self, _tenant: &str, _conversation: &str, _user: &str, _kind: PresenceKind) {}

    fn closing(&self) -> CancellationToken {
        CancellationToken::new()
    }

    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            held: self.held.clone(),
            uptime_secs: 9000,
            ..WorkerStatus::default()
        }
    }

    fn readiness(&self) -> Readiness {
        self.readiness
    }

    fn assignment(&self) -> Assignment {
        self.assignment.clone()
    }

    fn mesh(&self) -> MeshView {
        MeshView {
            agent: "mesh".into(),
            table: Some(AssignmentTable {
                generation: 7,
                ..AssignmentTable::default()
            }),
            reports: vec![
                (report("node-1", false), Duration::from_secs(9)),
                (
                    LoadReport {
                        address: "http://127.0.0.1:8080".into(),
                        ..report("node-0", false)
                    },
                    Duration::from_secs(1),
                ),
            ],
            heartbeat_timeout: Duration::from_secs(5),
            recent_moves: web::moved(),
            refused_migrations: vec![meshchat_wire::SystemEvent {
                v: 1,
                node: "balancer/mesh".into(),
                kind: meshchat_wire::MIGRATION_REFUSED.into(),
                detail: "mig-1: partition 3 was moved on request 4 s ago; the cooldown is 120 s".into(),
                timestamp: OffsetDateTime::UNIX_EPOCH,
            }],
            load_history: BTreeMap::from([("node-0".to_string(), web::samples())]),
        }
    }

    fn peer(&self, id: &str) -> Peer {
        self.peers.get(id).cloned().unwrap_or(Peer::Unknown)
    }

    fn handoff_estimate(&self) -> Option<Duration> {
        Some(Duration::from_millis(150))
    }

    async fn request_migration(&self, request: MigrateRequest) -> Result<(), String> {
        self.migrations.lock().expect("lock").push(request);
        Ok(())
    }

    async fn drain(&self) -> (Drained, usize) {
        self.drains.lock().expect("lock").push("drain");
        (Drained::HandedOver, 0)
    }

    fn undo_drain(&self) -> Result<bool, crate::drain::UndoRefused> {
        if self.stopping {
            return Err(crate::drain::UndoRefused::Stopping);
        }
        self.drains.lock().expect("lock").push("undo");
        Ok(true)
    }

    fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        Ok("# EOF\n".into())
    }

    fn http_metrics(&self) -> Option<crate::metrics::HttpMetrics> {
        Some(self.http.clone())
    }
}

async fn call(service: &Arc<Fake>, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app(service.clone()).oneshot(req).await.expect("a response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// A POST as the default tenant's admin.
fn post(path: &str, body: Value) -> Request<Body> {
    post_as("k-admin", path, body)
}

fn post_as(token: &str, path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// A GET as the default tenant's admin.
fn get(path: &str) -> Request<Body> {
    get_as("k-admin", path)
}

fn get_as(token: &str, path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn responses_are_counted_by_declared_route_method_and_status() {
    let s = Arc::new(fake());
    for path in [
        "/api/chat/conversation/a",
        "/api/chat/conversation/b",
        "/no/such/route",
    ] {
        let _ = call(&s, get_as("k-admin", path)).await;
    }
    let anonymous = Request::get("/api/chat/conversation/a")
        .body(Body::empty())
        .expect("request");
    let _ = call(&s, anonymous).await;
    let count = |route: &str, method: &'static str, status: u16| {
        s.http
            .requests
            .get_or_create(&crate::metrics::HttpLabel {
                route: route.into(),
                method,
                status,
            })
            .get()
    };
    let route = "/api/chat/conversation/{id}";
    assert_eq!(count(route, "GET", 404), 2, "ids are not label values");
    assert_eq!(count(route, "GET", 401), 1, "refused callers are counted too");
    assert_eq!(count("unmatched", "GET", 404), 1);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("t", "", s.http.duration.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoded");
    assert!(
        text.contains(&format!("t_count{{route=\"{route}\"}} 3")),
        "each response timed: {text}"
    );
}

#[tokio::test]
async fn a_valid_send_reaches_the_log_with_this_worker_as_acceptor() {
    let s = Arc::new(fake());
    let (status, body) = call(
        &s,
        post(
            "/api/chat/send",
            json!({"conversationId": "c-1", "userId": "u-1", "content": "hi"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Message sent");
    let appended = s.appended.lock().expect("lock").clone();
    assert_eq!(appended.len(), 1);
    let m = &appended[0];
    assert_eq!(body["messageId"], m.id.as_str());
    assert_eq!((m.conversation_id.as_str(), m.content.as_str()), ("c-1", "hi"));
    assert_eq!(m.accepted_by, "node-0");
    // the sender is the caller, whatever the body says; the tenant is the caller's
    assert_eq!((m.user_id.as_str(), m.tenant.as_str()), ("root", "default"));
    assert_eq!(
        *s.joined.lock().expect("lock"),
        vec![("c-1".to_string(), "root".to_string())]
    );
}

#[tokio::test]
async fn bad_sends_name_the_field_and_append_nothing() {
    let s = Arc::new(fake());
    let cases = [
        (
            json!({"userId": "u", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "conversationId",
        ),
        (
            json!({"conversationId": "c", "userId": "u", "content": ""}),
            StatusCode::BAD_REQUEST,
            "content",
        ),
        (
            json!({"conversationId": "a b", "userId": "u", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "conversationId",
        ),
        (
            json!({"conversationId": "c", "userId": "u", "content": "x".repeat(65)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "content",
        ),
    ];
    for (body, want, field) in cases {
        let (status, err) = call(&s, post("/api/chat/send", body.clone())).await;
        assert_eq!(status, want, "{body}: {err}");
        assert_eq!(err["field"], field, "{err}");
        assert!(
            err["message"].as_str().is_some_and(|m| m.starts_with(field)),
            "{err}"
        );
    }
    let resp = app(s.clone())
        .oneshot(
            Request::post("/api/chat/send")
                .header("authorization", "Bearer k-admin")
                .body(Body::from("{not json"))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        s.appended.lock().expect("lock").is_empty(),
        "nothing reaches the log"
    );
}

#[tokio::test]
async fn a_send_kafka_refuses_or_a_draining_worker_answers_503() {
    let mut f = fake();
    f.append = Err("broker down".into());
    let s = Arc::new(f);
    let msg = json!({"conversationId": "c", "userId": "u", "content": "x"});
    let (status, body) = call(&s, post("/api/chat/send", msg.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "unavailable");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("broker down")),
        "{body}"
    );
    let mut f = fake();
    f.readiness.draining = true;
    let s = Arc::new(f);
    let (status, _) = call(&s, post("/api/chat/send", msg)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(s.appended.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_read_is_served_here_forwarded_once_or_read_from_the_log() {
    let mut f = fake();
    f.local.insert("here".into(), Local::Found(conversation("here")));
    f.local.insert("gone".into(), Local::Missing);
    f.owners.insert("there".into(), owner("node-2"));
    f.owners.insert("mine".into(), owner("node-0"));
    f.forward = Ok(Forwarded {
        status: 200,
        body: bytes::Bytes::from_static(br#"{"id":"there","participants":[],"messages":[]}"#),
    });
    f.log = Ok(Some(conversation("from-log")));
    let s = Arc::new(f);
    // owned and live here: from memory, nothing forwarded or read
    let (status, body) = call(&s, get("/api/chat/conversation/here")).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("here")));
    let (status, _) = call(&s, get("/api/chat/conversation/gone")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // owned elsewhere: forwarded to the owner
    let (status, body) = call(&s, get("/api/chat/conversation/there")).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("there")));
    assert_eq!(*s.forwarded.lock().expect("lock"), vec!["http://node-2/there"]);
    // the public side ignores a client's forwarded-by header: forwarded all the same (only
    // the internal listener serves peers, and it never forwards)
    let req = Request::get("/api/chat/conversation/there")
        .header(FORWARDED, "node-1")
        .header("authorization", "Bearer k-admin")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(&s, req).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("there")));
    assert_eq!(s.forwarded.lock().expect("lock").len(), 2);
    // this worker is the owner but not live yet (replaying): the log
    let (status, _) = call(&s, get("/api/chat/conversation/mine")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*s.log_reads.lock().expect("lock"), vec!["mine"]);
}

#[tokio::test]
async fn an_unreachable_owner_falls_back_to_the_log_and_unknown_ids_are_404() {
    let mut f = fake();
    f.owners.insert("c".into(), owner("node-2"));
    let s = Arc::new(f);
    let (status, body) = call(&s, get("/api/chat/conversation/c")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");
    assert_eq!(s.forwarded.lock().expect("lock").len(), 1);
    assert_eq!(s.log_reads.lock().expect("lock").len(), 1);
    let (status, body) = call(&s, get("/api/chat/conversation/bad%20id")).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let mut f = fake();
    f.log = Err("broker down".into());
    let (status, body) = call(&Arc::new(f), get("/api/chat/conversation/c")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

fn migratable() -> Fake {
    let mut f = fake();
    for p in 0..4 {
        let node = if p < 2 { "node-0" } else { "node-1" };
        f.assignment.owners.insert(p, owner(node));
        if node == "node-0" {
            f.assignment.owned.insert(p, 1);
            f.held.insert(
                p,
                HeldPartition {
                    epoch: 1,
                    phase: Phase::Live,
                    answers: 0,
                    writable: true,
                },
            );
        }
    }
    f.peers
        .insert("node-1".into(), Peer::Alive(report("node-1", false)));
    f.peers.insert("node-2".into(), Peer::Silent);
    f.peers
        .insert("node-3".into(), Peer::Alive(report("node-3", true)));
    f
}

#[tokio::test]
async fn a_migration_publishes_what_moves() {
    let s = Arc::new(migratable());
    let (status, body) = call(
        &s,
        post_as("k-op", "/api/agent/migrate", json!({"targetNode": "node-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["partitions"], json!([0, 1]));
    assert_eq!(
        (body["sourceNode"].as_str(), body["estimatedTime"].as_str()),
        (Some("node-0"), Some("150ms"))
    );
    let (status, body) = call(
        &s,
        post_as(
            "k-op",
            "/api/agent/migrate",
            json!({"targetNode": "node-1", "partitions": [3, 1, 1]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["partitions"], json!([1]), "partition 3 is on node-1 already");
    let sent = s.migrations.lock().expect("lock").clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[1].target.as_str(), sent[1].partitions.clone()),
        ("node-1", vec![1])
    );
    assert_eq!(sent[1].source, "node-0,node-1");
}

#[tokio::test]
async fn refused_migrations_say_why_and_publish_nothing() {
    let cases: Vec<(Fake, Value, StatusCode, &str)> = vec![
        (
            migratable(),
            json!({"targetNode": "nobody"}),
            StatusCode::BAD_REQUEST,
            "targetNode",
        ),
        (
            migratable(),
            json!({"targetNode": "node-2"}),
            StatusCode::CONFLICT,
            "not alive",
        ),
        (
            migratable(),
            json!({"targetNode": "node-3"}),
            StatusCode::CONFLICT,
            "draining",
        ),
        (
            migratable(),
            json!({"targetNode": "node-1", "partitions": [9]}),
            StatusCode::BAD_REQUEST,
            "partitions",
        ),
        (
            migratable(),
            json!({"targetNode": "node-1", "partitions": [2, 3]}),
            StatusCode::CONFLICT,
            "already on",
        ),
        (
            migratable(),
            json!({"target": "node-1"}),
            StatusCode::BAD_REQUEST,
            "targetNode",
        ),
        (
            {
                let mut f = migratable();
                f.held.insert(
                    1,
                    HeldPartition {
                        epoch: 1,
                        phase: Phase::Releasing,
                        answers: 1,
                        writable: true,
                    },
                );
                f
            },
            json!({"targetNode": "node-1"}),
            StatusCode::CONFLICT,
            "in flight",
        ),
        (
            {
                let mut f = migratable();
                f.readiness.draining = true;
                f
            },
            json!({"targetNode": "node-1"}),
            StatusCode::CONFLICT,
            "draining",
        ),
        (
            {
                let mut f = migratable();
                f.assignment.owned.clear();
                f
            },
            json!({"targetNode": "node-1"}),
            StatusCode::CONFLICT,
            "owns no partitions",
        ),
        (
            {
                let mut f = migratable();
                f.settings.ownership = Ownership::Static;
                f
            },
            json!({"targetNode": "node-1"}),
            StatusCode::NOT_IMPLEMENTED,
            "statically",
        ),
    ];
    for (f, body, want, says) in cases {
        let s = Arc::new(f);
        let (status, err) = call(&s, post_as("k-op", "/api/agent/migrate", body.clone())).await;
        assert_eq!(status, want, "{body}: {err}");
        let text = err.to_string();
        assert!(text.contains(says), "{body}: {text}");
        assert!(s.migrations.lock().expect("lock").is_empty(), "{body}");
    }
}

#[tokio::test]
async fn status_mesh_and_unknown_routes() {
    let s = Arc::new(migratable());
    let (status, body) = call(&s, get("/api/agent/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["nodeId"], "node-0");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["uptime"], "2h 30m");
    assert_eq!(body["ownedPartitions"], json!([0, 1]));
    assert_eq!(body["phases"], json!({"0": "live", "1": "live"}));
    assert_eq!(body["ownership"], "dynamic");
    let (_, body) = call(&s, get("/api/mesh")).await;
    assert_eq!(body["generation"], 7);
    assert_eq!(body["workers"][0]["alive"], false, "heard 9 s ago, timeout 5 s");
    assert_eq!(body["refusedMigrations"][0]["requestId"], "mig-1");
    assert!(
        body["refusedMigrations"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cooldown"))
    );
    let (status, body) = call(&s, get("/no/such/route")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn live_streams_refuse_bad_queries_before_upgrading() {
    let s = Arc::new(fake());
    let (status, body) = call(&s, get("/api/chat/ws")).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("conversationId"))
    );
    let (status, body) = call(&s, get("/api/chat/ws?conversationId=c")).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("upgrade"))
    );
    // with --auth none the query's userId names the user shown online, so it is checked
    let mut f = fake();
    f.auth = authenticator(true);
    let s = Arc::new(f);
    let req = Request::get("/api/chat/conversation/c/events?userId=bad%20user")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(&s, req).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("userId"))
    );
}

#[tokio::test]
async fn over_a_limit_answers_429_with_retry_after_and_stores_nothing() {
    let mut f = fake();
    f.limits = Arc::new(Limits::new(LimitSettings {
        user_message_burst: 2,
        // bursts of a quarter: 2
        user_reads_per_minute: 8,
        ..LimitSettings::default()
    }));
    let s = Arc::new(f);
    let send = || {
        post(
            "/api/chat/send",
            json!({"conversationId": "c-1", "content": "hi"}),
        )
    };
    for _ in 0..2 {
        assert_eq!(call(&s, send()).await.0, StatusCode::OK);
    }
    let resp = app(s.clone()).oneshot(send()).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!((1..=1).contains(&retry), "{retry}");
    let (_, body) = call(&s, send()).await;
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(
        s.appended.lock().expect("lock").len(),
        2,
        "nothing stored over the limit"
    );
    // another user of the tenant is not limited; reads have their own budget
    let (status, _) = call(
        &s,
        post_as(
            "k-u",
            "/api/chat/send",
            json!({"conversationId": "c-2", "content": "hi"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let statuses: Vec<StatusCode> =
        futures::future::join_all((0..2).map(|_| call(&s, get("/api/chat/conversation/c-1"))))
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect();
    assert!(
        statuses.iter().all(|s| *s != StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let (status, body) = call(&s, get("/api/chat/conversation/c-1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("reads")),
        "{body}"
    );
}

#[tokio::test]
async fn an_idempotency_key_gives_a_retry_the_same_id_per_tenant() {
    let s = Arc::new(fake());
    let keyed = |token: &str, key: &str| {
        Request::post("/api/chat/send")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", key)
            .body(Body::from(
                json!({"conversationId": "c-1", "content": "hi"}).to_string(),
            ))
            .expect("request")
    };
    let (status, first) = call(&s, keyed("k-admin", "order-42")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = call(&s, keyed("k-admin", "order-42")).await;
    assert_eq!(first["messageId"], again["messageId"]);
    assert!(
        first["messageId"]
            .as_str()
            .is_some_and(|id| id.starts_with(meshchat_wire::KEYED_ID_PREFIX)),
        "{first}"
    );
    // another tenant's same key is another message; another key too
    let (_, acme) = call(&s, keyed("k-acme-admin", "order-42")).await;
    let (_, other) = call(&s, keyed("k-admin", "order-43")).await;
    assert_ne!(acme["messageId"], first["messageId"]);
    assert_ne!(other["messageId"], first["messageId"]);
    // a bad key names the header and stores nothing
    let before = s.appended.lock().expect("lock").len();
    for bad in ["", "with space", &"k".repeat(256)] {
        let (status, body) = call(&s, keyed("k-admin", bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["field"], "Idempotency-Key");
    }
    assert_eq!(s.appended.lock().expect("lock").len(), before);
}

#[tokio::test]
async fn while_kafka_is_unreachable_a_send_answers_503_and_queues_nothing() {
    let mut f = fake();
    f.readiness.kafka = false;
    let s = Arc::new(f);
    let (status, body) = call(
        &s,
        post(
            "/api/chat/send",
            json!({"conversationId": "c-1", "content": "hi"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Kafka is unreachable"))
    );
    assert!(s.appended.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn requests_beyond_the_workers_limit_answer_503_at_once() {
    let mut f = fake();
    f.limits = Arc::new(Limits::new(LimitSettings {
        max_requests: 2,
        ..LimitSettings::default()
    }));
    f.append_delay = Some(Duration::from_millis(300));
    let s = Arc::new(f);
    let send = || {
        post(
            "/api/chat/send",
            json!({"conversationId": "c-1", "content": "hi"}),
        )
    };
    let app = app(s.clone());
    let results = futures::future::join_all((0..5).map(|_| app.clone().oneshot(send()))).await;
    let statuses: Vec<StatusCode> = results
        .into_iter()
        .map(|r| r.expect("response").status())
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let shed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!((ok, shed), (2, 3), "{statuses:?}");
    assert_eq!(
        s.appended.lock().expect("lock").len(),
        2,
        "nothing of the shed ones stored"
    );
}

#[tokio::test]
async fn a_send_to_a_conversation_whose_owner_is_far_behind_answers_503_and_stores_nothing() {
    let mut f = fake();
    f.backlog = Some(LimitSettings::default().max_backlog + 1);
    let s = Arc::new(f);
    let resp = app(s.clone())
        .oneshot(post(
            "/api/chat/send",
            json!({"conversationId": "c-1", "content": "hi"}),
        ))
        .await
        .expect("a response");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some(), "says when to retry");
    assert!(s.appended.lock().expect("lock").is_empty());
}
