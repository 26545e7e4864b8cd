//! Records and a compact event trace for the live module's tests.

use meshchat_wire::{AgentReply, ChatRecord, ReplyChunk, UserMessage};
use time::OffsetDateTime;

use super::cursor::Positioned;
use crate::view::LiveEvent;

/// User message `m{i}`.
pub fn user(i: usize) -> ChatRecord {
    ChatRecord::UserMessage(UserMessage {
        v: 1,
        id: format!("m{i}"),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        user_id: "u".into(),
        content: format!("q{i}"),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        accepted_by: "n".into(),
        accepted_at: None,
    })
}

/// Reply `r{i}` to `m{i}` in `chunks` chunks.
pub fn reply(i: usize, chunks: u32) -> ChatRecord {
    ChatRecord::AgentReply(AgentReply {
        v: 1,
        id: format!("r{i}"),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        in_reply_to: format!("m{i}"),
        sender: "agent".into(),
        content: format!("a{i}"),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        node: "n".into(),
        epoch: 1,
        error: None,
        completion_tokens: chunks,
        attempt: 0,
        chunks,
        cancelled: false,
    })
}

/// Chunk `seq` of reply `r{i}` to the message at `user_offset`.
pub fn chunk(i: usize, user_offset: i64, seq: u32) -> ReplyChunk {
    ReplyChunk {
        v: 1,
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        in_reply_to: format!("m{i}"),
        user_offset,
        reply_id: format!("r{i}"),
        attempt: 0,
        seq,
        delta: format!("t{i}.{seq} "),
        node: "n".into(),
        epoch: 1,
    }
}

/// Compact trace: "M0", "T0.1", "R0".
pub fn trace(events: &[Positioned]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.event {
            LiveEvent::Message { message } => format!("M{}", &message.id[1..]),
            LiveEvent::Token { reply_id, seq, .. } => format!("T{}.{seq}", &reply_id[1..]),
            LiveEvent::Reply { message } => format!("R{}", &message.id[1..]),
            LiveEvent::Presence { .. } => "P".into(),
        })
        .collect()
}
