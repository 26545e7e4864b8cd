//! Validation of client input: pure, so every rule is unit- and property-tested.

mod openai;

pub use openai::{conversation_of_user, parse_completion};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Largest id length.
pub const MAX_ID_LEN: usize = 128;

/// A client error that names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON field (or `body`, or a path/query parameter) at fault.
    pub field: String,
    /// What is wrong, in words a client can act on.
    pub message: String,
    /// The problem is size, not shape (maps to 413).
    pub too_large: bool,
}

impl FieldError {
    /// An error naming `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
            too_large: false,
        }
    }
}

/// A validated `POST /api/chat/send` body.
#[derive(Clone, Debug, PartialEq)]
pub struct SendRequest {
    /// Conversation id.
    pub conversation_id: String,
    /// Sending user, when the body names it and it is trusted (`--auth none` only); with
    /// authentication the sender is the caller and a `userId` here is ignored.
    pub user_id: Option<String>,
    /// Message text.
    pub content: String,
    /// Client timestamp, if given.
    pub timestamp: Option<OffsetDateTime>,
}

/// Checks an id against `[A-Za-z0-9._:-]{1,128}`.
/// A page size from `?limit=` (`default` when absent): a whole number from 1 to `max`.
pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, FieldError> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| FieldError::new("limit", format!("must be a whole number from 1 to {max}"))),
    }
}

pub fn check_id(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| !is_id_char(*c)) {
        return Err(FieldError::new(
            field,
            format!("contains {c:?}; allowed are letters, digits and . _ : -"),
        ));
    }
    Ok(())
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, FieldError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(FieldError::new(
            "body",
            "request body is empty; expected a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FieldError::new("body", "expected a JSON object")),
        Err(e) => Err(FieldError::new("body", format!("malformed JSON: {e}"))),
    }
}

fn required_str<'a>(map: &'a serde_json::Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(FieldError::new(
            field,
            format!("must be a string, got {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses and validates a send body. `max_content` is in bytes of UTF-8. `sender_from_body`:
/// the body's `userId` names the sender (`--auth none`), so it is required and checked;
/// otherwise it is accepted and ignored, whatever it holds.
pub fn parse_send(
    body: &[u8],
    max_content: usize,
    sender_from_body: bool,
) -> Result<SendRequest, FieldError> {
    let map = object(body)?;
    let conversation_id = required_str(&map, "conversationId")?;
    check_id("conversationId", conversation_id)?;
    let user_id = if sender_from_body {
        let u = required_str(&map, "userId")?;
        check_id("userId", u)?;
        Some(u.to_string())
    } else {
        None
    };
    let content = required_str(&map, "content")?;
    if content.trim().is_empty() {
        return Err(FieldError::new("content", "must not be empty"));
    }
    if content.len() > max_content {
        return Err(FieldError {
            too_large: true,
            ..FieldError::new(
                "content",
                format!("is {} bytes; the limit is {max_content} bytes", content.len()),
            )
        });
    }
    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
            FieldError::new(
                "timestamp",
                "must be an RFC 3339 time such as 2025-11-11T10:30:00Z",
            )
        })?),
        Some(other) => {
            return Err(FieldError::new(
                "timestamp",
                format!("must be an RFC 3339 string, got {}", kind(other)),
            ));
        }
    };
    Ok(SendRequest {
        conversation_id: conversation_id.to_string(),
        user_id,
        content: content.to_string(),
        timestamp,
    })
}

/// Parses `{"userId": …}`, the body of `POST /api/chat/conversation/{id}/participants`.
pub fn parse_participant(body: &[u8]) -> Result<String, FieldError> {
    let map = object(body)?;
    let user = required_str(&map, "userId")?;
    check_id("userId", user)?;
    Ok(user.to_string())
}

/// A validated `POST /api/agent/migrate` body.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrateBody {
    /// Node to move to.
    pub target_node: String,
    /// Move only this conversation's partition.
    pub conversation_id: Option<String>,
    /// Move these partitions.
    pub partitions: Option<Vec<i32>>,
}

/// Parses and validates a migrate body.
pub fn parse_migrate(body: &[u8]) -> Result<MigrateBody, FieldError> {
    let map = object(body)?;
    let target_node = required_str(&map, "targetNode")?;
    check_id("targetNode", target_node)?;
    let conversation_id = match map.get("conversationId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_id("conversationId", s)?;
            Some(s.clone())
        }
        Some(other) => {
            return Err(FieldError::new(
                "conversationId",
                format!("must be a string, got {}", kind(other)),
            ));
        }
    };
    let partitions = match map.get("partitions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| {
                    v.as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| FieldError::new("partitions", "must be non-negative integers"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => {
            return Err(FieldError::new(
                "partitions",
                format!("must be an array of integers, got {}", kind(other)),
            ));
        }
    };
    Ok(MigrateBody {
        target_node: target_node.to_string(),
        conversation_id,
        partitions,
    })
}

#[cfg(test)]
mod tests;
