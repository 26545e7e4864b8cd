//! JSON shapes served to clients (the seed's API), built from log records.

use meshchat_wire::{ChatRecord, ReplyChunk, ReplyError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::Conversation;

/// One message as `GET /api/chat/conversation/{id}` and live streams show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// User id, or the agent's name for replies.
    pub sender: String,
    /// Text; for an error reply, the error in words.
    pub content: String,
    /// RFC 3339 time.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// For replies: the answered message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// For replies: the worker that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// For error replies: why the LLM did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::http::openapi::ReplyErrorDoc>)]
    pub error: Option<ReplyError>,
    /// For replies stopped on request: `content` is the text so far.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

impl From<&ChatRecord> for MessageView {
    fn from(record: &ChatRecord) -> Self {
        match record {
            ChatRecord::UserMessage(m) => MessageView {
                id: m.id.clone(),
                sender: m.user_id.clone(),
                content: m.content.clone(),
                timestamp: m.timestamp,
                in_reply_to: None,
                node: None,
                error: None,
                cancelled: false,
            },
            ChatRecord::AgentReply(r) => MessageView {
                id: r.id.clone(),
                sender: r.sender.clone(),
                content: match &r.error {
                    Some(e) if r.content.is_empty() => format!("[error] {}", e.message),
                    _ => r.content.clone(),
                },
                timestamp: r.timestamp,
                in_reply_to: Some(r.in_reply_to.clone()),
                node: Some(r.node.clone()),
                error: r.error.clone(),
                cancelled: r.cancelled,
            },
            ChatRecord::ParticipantAdded(p) => MessageView {
                id: p.id.clone(),
                sender: "system".into(),
                content: format!("{} added {}", p.added_by, p.user_id),
                timestamp: p.timestamp,
                in_reply_to: None,
                node: None,
                error: None,
                cancelled: false,
            },
            ChatRecord::EpochFence(f) => MessageView {
                id: format!("fence-{}-{}", f.partition, f.epoch),
                sender: "system".into(),
                content: format!(
                    "{} owns partition {} from epoch {}",
                    f.owner, f.partition, f.epoch
                ),
                timestamp: f.timestamp,
                in_reply_to: None,
                node: Some(f.owner.clone()),
                error: None,
                cancelled: false,
            },
            ChatRecord::CancelRequest(c) => MessageView {
                id: c.id.clone(),
                sender: "system".into(),
                content: format!("{} asked to stop the reply", c.requested_by),
                timestamp: c.timestamp,
                in_reply_to: None,
                node: None,
                error: None,
                cancelled: false,
            },
            ChatRecord::ConversationDeleted(d) => MessageView {
                id: d.id.clone(),
                sender: "system".into(),
                content: format!("{} deleted the conversation", d.deleted_by),
                timestamp: d.timestamp,
                in_reply_to: None,
                node: None,
                error: None,
                cancelled: false,
            },
        }
    }
}

/// A whole conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConversationView {
    /// Conversation id.
    pub id: String,
    /// Users, then the agent once it has replied.
    pub participants: Vec<String>,
    /// Retained history (or the page asked for), oldest first.
    pub messages: Vec<MessageView>,
    /// Older messages exist than these: ask for them with `?before=<the first one's id>`.
    #[serde(default, rename = "hasMore")]
    pub has_more: bool,
}

impl ConversationView {
    /// The client view of `conv`; `agent_name` is the replies' sender.
    pub fn of(conv: &Conversation, agent_name: &str) -> Self {
        let mut participants = conv.participants.clone();
        let mut agent_seen = false;
        for e in &conv.entries {
            if let ChatRecord::AgentReply(r) = &e.record {
                agent_seen = true;
                if !participants.contains(&r.sender) {
                    participants.push(r.sender.clone());
                }
            }
        }
        // replies evicted from the retained window still make the agent a participant
        if conv.agent_replied && !agent_seen && !participants.iter().any(|p| p == agent_name) {
            participants.push(agent_name.to_string());
        }
        Self {
            id: meshchat_wire::split_key(&conv.key).1.to_string(),
            participants,
            messages: conv
                .entries
                .iter()
                .map(|e| MessageView::from(&e.record))
                .collect(),
            has_more: conv.trimmed,
        }
    }

    /// The page of at most `limit` messages just before message `before` (the newest when
    /// `None`), if this view can tell: `None` when `before` is not among its messages, or when
    /// older messages it does not hold are needed.
    pub fn page(&self, before: Option<&str>, limit: usize) -> Option<ConversationView> {
        let end = match before {
            Some(id) => self.messages.iter().position(|m| m.id == id)?,
            None => self.messages.len(),
        };
        let start = end.saturating_sub(limit);
        if start == 0 && end < limit && self.has_more {
            return None;
        }
        Some(ConversationView {
            id: self.id.clone(),
            participants: self.participants.clone(),
            messages: self.messages[start..end].to_vec(),
            has_more: start > 0 || self.has_more,
        })
    }
}

/// `GET /api/chat/conversations`: a page of the caller's conversations, most recent first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    /// Most recent first.
    pub conversations: Vec<ConversationSummary>,
    /// Pass as `?cursor=` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// How many the whole list holds.
    pub total: usize,
}

/// One conversation in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    /// Conversation id.
    pub id: String,
    /// The first message's beginning (80 characters).
    pub title: String,
    /// Its latest message or reply (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub last_activity: OffsetDateTime,
    /// Messages and replies.
    pub message_count: u64,
    /// Users who take part.
    pub participants: Vec<String>,
}

impl From<crate::index::Page> for ConversationList {
    fn from(page: crate::index::Page) -> Self {
        Self {
            conversations: page
                .items
                .into_iter()
                .map(|l| ConversationSummary {
                    id: l.id,
                    title: l.title,
                    last_activity: OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(l.last_activity_ms) * 1_000_000,
                    )
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    message_count: l.message_count,
                    participants: l.participants,
                })
                .collect(),
            next_cursor: page.next.map(|c| c.to_string()),
            total: page.total,
        }
    }
}

/// An event on a live stream (WebSocket text frame or SSE `data:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum LiveEvent {
    /// A user message entered the conversation.
    Message {
        /// The message.
        message: MessageView,
    },
    /// A piece of a reply being generated.
    #[serde(rename_all = "camelCase")]
    Token {
        /// Answered message.
        in_reply_to: String,
        /// Id the final reply will have.
        reply_id: String,
        /// The answering owner's epoch: a higher one (the conversation moved, or its owner
        /// failed over, mid-reply) restarts the text.
        epoch: u64,
        /// LLM attempt within that epoch; a higher one restarts the text.
        attempt: u32,
        /// Chunk number within the attempt.
        seq: u32,
        /// Text.
        delta: String,
    },
    /// The final reply (or error reply).
    Reply {
        /// The reply.
        message: MessageView,
    },
    /// A user's presence changed.
    #[serde(rename_all = "camelCase")]
    Presence {
        /// User.
        user_id: String,
        /// joined, left, online, offline.
        kind: meshchat_wire::PresenceKind,
    },
}

impl LiveEvent {
    /// The token event for a chunk.
    pub fn token(c: &ReplyChunk) -> Self {
        LiveEvent::Token {
            in_reply_to: c.in_reply_to.clone(),
            reply_id: c.reply_id.clone(),
            epoch: c.epoch,
            attempt: c.attempt,
            seq: c.seq,
            delta: c.delta.clone(),
        }
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Message { .. } => "message",
            LiveEvent::Token { .. } => "token",
            LiveEvent::Reply { .. } => "reply",
            LiveEvent::Presence { .. } => "presence",
        }
    }
}
