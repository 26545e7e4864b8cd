use super::*;
use proptest::prelude::*;

fn send(body: &str) -> Result<SendRequest, FieldError> {
    parse_send(body.as_bytes(), 32 * 1024, true)
}

#[test]
fn accepts_the_seed_example() {
    let req = send(r#"{"conversationId":"conv-123","userId":"user-456","content":"Hello, how are you?","timestamp":"2025-11-11T10:30:00Z"}"#)
        .expect("valid");
    assert_eq!(req.conversation_id, "conv-123");
    assert_eq!(req.timestamp.map(|t| t.unix_timestamp()), Some(1_762_857_000));
}

#[test]
fn an_authenticated_send_ignores_whatever_userid_holds() {
    for body in [
        r#"{"conversationId":"c","content":"x"}"#,
        r#"{"conversationId":"c","userId":"someone-else","content":"x"}"#,
        r#"{"conversationId":"c","userId":"u/x y","content":"x"}"#,
        r#"{"conversationId":"c","userId":42,"content":"x"}"#,
    ] {
        let req = parse_send(body.as_bytes(), 100, false).expect(body);
        assert_eq!(req.user_id, None, "{body}");
    }
}

#[test]
fn each_bad_input_names_its_field() {
    let cases = [
        ("", "body"),
        ("{not json", "body"),
        ("[1,2]", "body"),
        (r#"{"userId":"u","content":"x"}"#, "conversationId"),
        (
            r#"{"conversationId":5,"userId":"u","content":"x"}"#,
            "conversationId",
        ),
        (
            r#"{"conversationId":"a b","userId":"u","content":"x"}"#,
            "conversationId",
        ),
        (r#"{"conversationId":"c","content":"x"}"#, "userId"),
        (r#"{"conversationId":"c","userId":"u/x","content":"x"}"#, "userId"),
        (r#"{"conversationId":"c","userId":"u"}"#, "content"),
        (
            r#"{"conversationId":"c","userId":"u","content":"   "}"#,
            "content",
        ),
        (
            r#"{"conversationId":"c","userId":"u","content":["x"]}"#,
            "content",
        ),
        (
            r#"{"conversationId":"c","userId":"u","content":"x","timestamp":"yesterday"}"#,
            "timestamp",
        ),
        (
            r#"{"conversationId":"c","userId":"u","content":"x","timestamp":12}"#,
            "timestamp",
        ),
    ];
    for (body, field) in cases {
        let err = send(body).expect_err(body);
        assert_eq!(err.field, field, "body {body:?} gave {err}");
        assert!(!err.too_large);
    }
}

#[test]
fn content_over_limit_is_too_large() {
    let body = format!(
        r#"{{"conversationId":"c","userId":"u","content":"{}"}}"#,
        "a".repeat(101)
    );
    let err = parse_send(body.as_bytes(), 100, true).expect_err("over limit");
    assert_eq!(err.field, "content");
    assert!(err.too_large);
    let ok = format!(
        r#"{{"conversationId":"c","userId":"u","content":"{}"}}"#,
        "a".repeat(100)
    );
    assert!(parse_send(ok.as_bytes(), 100, true).is_ok());
}

#[test]
fn id_length_bounds() {
    assert!(check_id("x", &"a".repeat(128)).is_ok());
    assert!(check_id("x", &"a".repeat(129)).is_err());
    assert!(check_id("x", "").is_err());
}

#[test]
fn migrate_bodies() {
    assert_eq!(
        parse_migrate(br#"{"targetNode":"n-2"}"#).expect("ok").target_node,
        "n-2"
    );
    assert_eq!(parse_migrate(br#"{}"#).expect_err("missing").field, "targetNode");
    assert_eq!(
        parse_migrate(br#"{"targetNode":"n","partitions":[1,-2]}"#)
            .expect_err("neg")
            .field,
        "partitions"
    );
    assert_eq!(
        parse_migrate(br#"{"targetNode":"n","partitions":[1,2]}"#)
            .expect("ok")
            .partitions,
        Some(vec![1, 2])
    );
}

proptest! {
    #[test]
    fn ids_from_the_alphabet_pass(id in "[A-Za-z0-9._:-]{1,128}") {
        prop_assert!(check_id("id", &id).is_ok());
    }

    #[test]
    fn ids_with_any_other_char_fail(pre in "[a-z]{0,5}", bad in "[^A-Za-z0-9._:-]", post in "[a-z]{0,5}") {
        let id = format!("{pre}{bad}{post}");
        prop_assert_eq!(check_id("id", &id).expect_err("bad char").field, "id");
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_send(&body, 1024, true);
        let _ = parse_send(&body, 1024, false);
        let _ = parse_migrate(&body);
    }
}
