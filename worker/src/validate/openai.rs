//! `POST /v1/chat/completions` bodies, as OpenAI's clients send them. MeshChat keeps the
//! conversation itself: the request's last message (a user's) is the new message, the earlier
//! ones are the client's copy of the history and are not stored again. Sampling settings
//! (`temperature`, `max_tokens`, …) belong to the ChatAgent and are ignored; what would change
//! the answer's shape and cannot be honoured (`n` > 1, tools) is refused, naming the field.

use serde_json::{Map, Value};

use super::{FieldError, check_id, kind, object};

/// A validated chat-completions request.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    /// The model asked for.
    pub model: String,
    /// The last message's text: the new user message.
    pub content: String,
    /// Answer as a stream of chunks.
    pub stream: bool,
    /// OpenAI's `user`: names the conversation when no header does.
    pub user: Option<String>,
}

/// Fields that would change what the answer is and are not supported.
const REFUSED: [(&str, &str); 5] = [
    (
        "tools",
        "tools are not supported: the ChatAgent's model answers in text",
    ),
    (
        "tool_choice",
        "tools are not supported: the ChatAgent's model answers in text",
    ),
    (
        "functions",
        "functions are not supported: the ChatAgent's model answers in text",
    ),
    (
        "function_call",
        "functions are not supported: the ChatAgent's model answers in text",
    ),
    ("audio", "audio output is not supported"),
];

/// Parses a chat-completions body; `max_content` bounds the new message in bytes.
pub fn parse_completion(body: &[u8], max_content: usize) -> Result<CompletionRequest, FieldError> {
    let map = object(body)?;
    let model = match map.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(FieldError::new("model", "is required (GET /v1/models lists it)"));
        }
        Some(other) => {
            return Err(FieldError::new(
                "model",
                format!("must be a string, got {}", kind(other)),
            ));
        }
    };
    for (field, why) in REFUSED {
        if map
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]))
        {
            return Err(FieldError::new(field, why));
        }
    }
    match map.get("n") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(_) => return Err(FieldError::new("n", "only one choice (n = 1) is produced")),
    }
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(FieldError::new(
                "stream",
                format!("must be a boolean, got {}", kind(other)),
            ));
        }
    };
    let user = match map.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if !u.is_empty() => Some(u.clone()),
        Some(Value::String(_)) => return Err(FieldError::new("user", "must not be empty")),
        Some(other) => {
            return Err(FieldError::new(
                "user",
                format!("must be a string, got {}", kind(other)),
            ));
        }
    };
    let content = last_user_text(&map)?;
    if content.trim().is_empty() {
        return Err(FieldError::new(
            "messages",
            "the last message's content must not be empty",
        ));
    }
    if content.len() > max_content {
        return Err(FieldError {
            too_large: true,
            ..FieldError::new(
                "messages",
                format!(
                    "the last message is {} bytes; the limit is {max_content} bytes",
                    content.len()
                ),
            )
        });
    }
    Ok(CompletionRequest {
        model,
        content,
        stream,
        user,
    })
}

/// The text of `messages`' last element, which must be a user's: a string, or text parts.
fn last_user_text(map: &Map<String, Value>) -> Result<String, FieldError> {
    let messages = match map.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(FieldError::new("messages", "must not be empty")),
        None | Some(Value::Null) => return Err(FieldError::new("messages", "is required")),
        Some(other) => {
            return Err(FieldError::new(
                "messages",
                format!("must be an array, got {}", kind(other)),
            ));
        }
    };
    let last = messages.len() - 1;
    let field = format!("messages[{last}]");
    let Some(Value::Object(message)) = messages.last() else {
        return Err(FieldError::new(&field, "must be an object with role and content"));
    };
    match message.get("role") {
        Some(Value::String(r)) if r == "user" => {}
        Some(Value::String(r)) => {
            return Err(FieldError::new(
                &format!("{field}.role"),
                format!("the last message must be the user's new message, not {r:?}"),
            ));
        }
        _ => return Err(FieldError::new(&format!("{field}.role"), "is required")),
    }
    let content_field = format!("{field}.content");
    match message.get("content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                let part_field = format!("{content_field}[{i}]");
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => {
                        return Err(FieldError::new(&format!("{part_field}.text"), "must be a string"));
                    }
                    (Some(other), _) => {
                        return Err(FieldError::new(
                            &format!("{part_field}.type"),
                            format!("only text parts are supported, not {other:?}"),
                        ));
                    }
                    (None, _) => return Err(FieldError::new(&format!("{part_field}.type"), "is required")),
                }
            }
            Ok(texts.join("\n"))
        }
        None | Some(Value::Null) => Err(FieldError::new(&content_field, "is required")),
        Some(other) => Err(FieldError::new(
            &content_field,
            format!("must be a string or an array of text parts, got {}", kind(other)),
        )),
    }
}

/// The conversation a request without `X-MeshChat-Conversation` continues: one per OpenAI
/// `user` (within the caller's tenant), named so it passes the id rules whatever `user` holds.
pub fn conversation_of_user(user: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(user.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let id = format!("openai-user-{hex}");
    debug_assert!(check_id("conversation", &id).is_ok());
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CompletionRequest, FieldError> {
        parse_completion(v.to_string().as_bytes(), 1000)
    }

    #[test]
    fn the_last_user_message_is_the_new_message() {
        let r = parse(json!({
            "model": "support",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "where is my order?"}
            ],
            "stream": true,
            "user": "ann@example.com",
            "temperature": 0.2,
            "max_tokens": 50,
            "tools": []
        }))
        .expect("valid");
        assert_eq!(
            r,
            CompletionRequest {
                model: "support".into(),
                content: "where is my order?".into(),
                stream: true,
                user: Some("ann@example.com".into()),
            }
        );
        let parts = parse(json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "first"}, {"type": "text", "text": "second"}
            ]}]
        }))
        .expect("text parts");
        assert_eq!((parts.content.as_str(), parts.stream), ("first\nsecond", false));
    }

    #[test]
    fn bad_requests_name_their_field() {
        let field = |v: Value| parse(v).expect_err("refused").field;
        let user = |c: Value| json!({"model": "m", "messages": [{"role": "user", "content": c}]});
        assert_eq!(
            field(json!({"messages": [{"role": "user", "content": "x"}]})),
            "model"
        );
        assert_eq!(field(json!({"model": 3, "messages": []})), "model");
        assert_eq!(field(json!({"model": "m"})), "messages");
        assert_eq!(field(json!({"model": "m", "messages": []})), "messages");
        assert_eq!(field(json!({"model": "m", "messages": "hi"})), "messages");
        assert_eq!(field(json!({"model": "m", "messages": ["hi"]})), "messages[0]");
        assert_eq!(
            field(
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
            ),
            "messages[1].role"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": [{"content": "a"}]})),
            "messages[0].role"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": [{"role": "user"}]})),
            "messages[0].content"
        );
        assert_eq!(field(user(json!(7))), "messages[0].content");
        assert_eq!(field(user(json!("  "))), "messages");
        assert_eq!(
            field(user(json!([{"type": "image_url", "image_url": {"url": "x"}}]))),
            "messages[0].content[0].type"
        );
        assert_eq!(
            field(user(json!([{"type": "text"}]))),
            "messages[0].content[0].text"
        );
        assert_eq!(field(user(json!([{"text": "x"}]))), "messages[0].content[0].type");
        let with = |k: &str, v: Value| {
            let mut b = user(json!("hi"));
            b[k] = v;
            b
        };
        assert_eq!(field(with("n", json!(2))), "n");
        assert!(parse(with("n", json!(1))).is_ok());
        assert_eq!(field(with("stream", json!("yes"))), "stream");
        assert_eq!(field(with("user", json!(""))), "user");
        assert_eq!(field(with("user", json!(5))), "user");
        assert_eq!(field(with("tools", json!([{"type": "function"}]))), "tools");
        assert_eq!(field(with("function_call", json!("auto"))), "function_call");
        let big = parse_completion(user(json!("x".repeat(1001))).to_string().as_bytes(), 1000)
            .expect_err("too large");
        assert!(big.too_large && big.field == "messages", "{big:?}");
    }

    #[test]
    fn conversations_of_users_are_stable_valid_ids() {
        let a = conversation_of_user("ann@example.com");
        assert_eq!(a, conversation_of_user("ann@example.com"));
        assert_ne!(a, conversation_of_user("bob@example.com"));
        for u in ["ann@example.com", "ünïcode user", "x", &"long".repeat(100)] {
            assert!(check_id("c", &conversation_of_user(u)).is_ok());
        }
    }
}
