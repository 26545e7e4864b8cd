use super::*;
use proptest::prelude::*;
use time::OffsetDateTime;

fn ts() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_762_857_000).expect("valid timestamp")
}

fn user(content: &str) -> ChatRecord {
    ChatRecord::UserMessage(UserMessage {
        v: SCHEMA_VERSION,
        id: "msg-1".into(),
        conversation_id: "conv-123".into(),
        tenant: crate::DEFAULT_TENANT.into(),
        user_id: "user-456".into(),
        content: content.into(),
        timestamp: ts(),
        accepted_by: "node-0".into(),
        accepted_at: None,
    })
}

#[test]
fn user_message_wire_shape_is_stable() {
    let bytes = encode(&user("Hello")).expect("encode");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(json["type"], "userMessage");
    assert_eq!(json["v"], 1);
    assert_eq!(json["conversationId"], "conv-123");
    assert_eq!(json["userId"], "user-456");
    assert_eq!(json["timestamp"], "2025-11-11T10:30:00Z");
}

#[test]
fn newer_version_is_refused() {
    let mut json: serde_json::Value =
        serde_json::from_slice(&encode(&user("x")).expect("encode")).expect("json");
    json["v"] = 2.into();
    let err = decode::<ChatRecord>(json.to_string().as_bytes()).expect_err("must refuse");
    assert!(matches!(
        err,
        RecordError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
}

#[test]
fn garbage_is_malformed() {
    assert!(matches!(
        decode::<ChatRecord>(b"{\"type\":\"nope\"}"),
        Err(RecordError::Malformed(_))
    ));
    assert!(matches!(
        decode::<MeshEvent>(b"not json"),
        Err(RecordError::Malformed(_))
    ));
}

#[test]
fn missing_version_reads_as_v1() {
    let raw = br#"{"type":"userMessage","id":"m","conversationId":"c","userId":"u","content":"hi","timestamp":"2025-11-11T10:30:00Z","acceptedBy":"n"}"#;
    let rec = decode::<ChatRecord>(raw).expect("decode");
    assert_eq!(rec.version(), 1);
}

fn arb_reply() -> impl Strategy<Value = ChatRecord> {
    (
        any::<String>(),
        any::<String>(),
        any::<u64>(),
        proptest::option::of(any::<String>()),
        0i64..4_000_000_000,
    )
        .prop_map(|(content, in_reply_to, epoch, err, secs)| {
            ChatRecord::AgentReply(AgentReply {
                v: SCHEMA_VERSION,
                id: "r".into(),
                conversation_id: "c".into(),
                tenant: crate::DEFAULT_TENANT.into(),
                in_reply_to,
                sender: "agent".into(),
                content,
                timestamp: OffsetDateTime::from_unix_timestamp(secs).expect("in range"),
                node: "n".into(),
                epoch,
                error: err.map(|message| ReplyError {
                    kind: ReplyErrorKind::Upstream,
                    message,
                    attempts: 3,
                }),
                completion_tokens: 7,
                attempt: 1,
                chunks: 4,
                cancelled: false,
            })
        })
}

proptest! {
    #[test]
    fn chat_records_round_trip(rec in prop_oneof![any::<String>().prop_map(|c| user(&c)), arb_reply()]) {
        let back: ChatRecord = decode(&encode(&rec).expect("encode")).expect("decode");
        prop_assert_eq!(back, rec);
    }

    #[test]
    fn load_reports_round_trip(lf in 0.0f64..10.0, parts in proptest::collection::vec(0i32..1024, 0..32), draining: bool) {
        let ev = MeshEvent::LoadReport(LoadReport {
            v: SCHEMA_VERSION,
            worker_id: "w".into(),
            address: "http://127.0.0.1:8080".into(),
            internal_address: Some("http://127.0.0.1:9080".into()),
            generation: 3,
            partitions: parts.into_iter().map(|partition| PartitionLoad { partition, ..Default::default() }).collect(),
            load_factor: lf,
            draining,
            timestamp: ts(),
        });
        let back: MeshEvent = decode(&encode(&ev).expect("encode")).expect("decode");
        prop_assert_eq!(back, ev);
    }
}

#[test]
fn handoff_steps_keep_their_wire_names() {
    let names = [
        (HandoffStep::Releasing, "releasing"),
        (HandoffStep::Released, "released"),
        (HandoffStep::Live, "live"),
        (HandoffStep::Assigned(AssignReason::Failover), "assigned:failover"),
        (
            HandoffStep::Assigned(AssignReason::Unassigned),
            "assigned:unassigned",
        ),
        (
            HandoffStep::Assigned(AssignReason::Requested),
            "assigned:requested",
        ),
    ];
    for (step, name) in names {
        assert_eq!(serde_json::to_value(&step).expect("json"), name);
        assert_eq!(
            serde_json::from_value::<HandoffStep>(name.into()).expect("parse"),
            step
        );
    }
    for reason in AssignReason::ALL {
        let step = HandoffStep::Assigned(reason);
        assert_eq!(HandoffStep::from(step.to_string().as_str()), step);
    }
    // a newer writer's step is kept, not refused
    let other: HandoffStep = serde_json::from_value("paused".into()).expect("parse");
    assert_eq!(other, HandoffStep::Other("paused".into()));
    assert_eq!(serde_json::to_value(&other).expect("json"), "paused");
}

#[test]
fn a_table_without_a_heartbeat_timeout_reads_the_default() {
    let raw = br#"{"agent":"a","generation":2,"partitions":[],"workers":{}}"#;
    let t = decode::<AssignmentTable>(raw).expect("decode");
    assert_eq!(t.heartbeat_timeout_ms, DEFAULT_HEARTBEAT_TIMEOUT_MS);
    assert_eq!(
        AssignmentTable::default().heartbeat_timeout_ms,
        DEFAULT_HEARTBEAT_TIMEOUT_MS
    );
    let back: AssignmentTable = decode(
        &encode(&AssignmentTable {
            heartbeat_timeout_ms: 1_234,
            ..AssignmentTable::default()
        })
        .expect("encode"),
    )
    .expect("decode");
    assert_eq!(back.heartbeat_timeout_ms, 1_234);
}

#[test]
fn tenants_travel_in_records_and_keys_and_the_default_is_unchanged_on_the_wire() {
    let default = user("hi");
    let json: serde_json::Value = serde_json::from_slice(&encode(&default).expect("encode")).expect("json");
    assert!(
        json.get("tenant").is_none(),
        "the default tenant writes what was written before: {json}"
    );
    assert_eq!(default.key(), "conv-123");
    let mut acme = default.clone();
    if let ChatRecord::UserMessage(m) = &mut acme {
        m.tenant = "acme".into();
    }
    let json: serde_json::Value = serde_json::from_slice(&encode(&acme).expect("encode")).expect("json");
    assert_eq!(json["tenant"], "acme");
    assert_eq!(acme.key(), "acme/conv-123");
    let back: ChatRecord = decode(&encode(&acme).expect("encode")).expect("decode");
    assert_eq!(back, acme);
    // a record written before tenants existed reads as the default tenant's
    let old = br#"{"type":"agentReply","id":"r","conversationId":"c","inReplyTo":"m","sender":"a","content":"x","timestamp":"2025-11-11T10:30:00Z","node":"n","epoch":1}"#;
    let old = decode::<ChatRecord>(old).expect("decode");
    assert_eq!(old.key(), "c");
}
