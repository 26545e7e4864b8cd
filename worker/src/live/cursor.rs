//! Where a client stands in a conversation's live events, so it can resume on any worker.
//!
//! A conversation's events come from three logs: `chat.messages` (user messages, replies),
//! `chat.stream` (tokens) and `chat.users` (presence), one partition of each, the same number.
//! No order between the logs is stored, and workers read them interleaved differently, but
//! each log's events reach a client in offset order. So a client's position is a vector: the
//! next offset it has not seen in each log. An event's id is that vector after the event
//! (`<messages>.<stream>.<users>`); resuming from it delivers exactly the events at or after
//! each offset, whichever worker serves it. Pure.

use std::fmt;
use std::str::FromStr;

use crate::view::LiveEvent;

/// One of the logs a conversation's live events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    /// `chat.messages`: user messages and replies.
    Messages,
    /// `chat.stream`: tokens.
    Stream,
    /// `chat.users`: presence.
    Users,
}

/// The record an event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// Its log.
    pub topic: Topic,
    /// Its offset there.
    pub offset: i64,
}

impl Pos {
    /// A record of `topic` at `offset`.
    pub fn new(topic: Topic, offset: i64) -> Self {
        Self { topic, offset }
    }
}

/// A live event and the record it comes from.
#[derive(Clone, Debug)]
pub struct Positioned {
    /// Where it comes from.
    pub pos: Pos,
    /// The event.
    pub event: LiveEvent,
}

/// A client's position: the next offset not yet delivered in each log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Next offset of `chat.messages`.
    pub messages: i64,
    /// Next offset of `chat.stream`.
    pub stream: i64,
    /// Next offset of `chat.users`.
    pub users: i64,
}

/// A cursor a client sent that is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an event id: expected three offsets `<messages>.<stream>.<users>`, e.g. 120.4511.33")]
pub struct BadCursor;

// === impl Cursor ===

impl Cursor {
    /// The next offset of `topic`.
    pub fn get(&self, topic: Topic) -> i64 {
        match topic {
            Topic::Messages => self.messages,
            Topic::Stream => self.stream,
            Topic::Users => self.users,
        }
    }

    fn slot(&mut self, topic: Topic) -> &mut i64 {
        match topic {
            Topic::Messages => &mut self.messages,
            Topic::Stream => &mut self.stream,
            Topic::Users => &mut self.users,
        }
    }

    /// Whether the event at `pos` is new to this client; if so the cursor moves past it.
    pub fn admit(&mut self, pos: Pos) -> bool {
        let next = self.slot(pos.topic);
        if pos.offset < *next {
            return false;
        }
        *next = pos.offset + 1;
        true
    }

    /// Whether every offset is at or below `other`'s (a cursor past the end of the log is not
    /// one this mesh gave out).
    pub fn within(&self, other: &Cursor) -> bool {
        [Topic::Messages, Topic::Stream, Topic::Users]
            .into_iter()
            .all(|t| self.get(t) <= other.get(t))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.messages, self.stream, self.users)
    }
}

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let mut parts = s.trim().split('.').map(|p| {
            if p.is_empty() || p.len() > 18 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadCursor);
            }
            p.parse::<i64>().map_err(|_| BadCursor)
        });
        let (Some(m), Some(st), Some(u), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadCursor);
        };
        Ok(Self {
            messages: m?,
            stream: st?,
            users: u?,
        })
    }
}

/// What one client is sent: events already read from the log (a resume's catch-up), then live
/// ones, each once, in each log's order; every event delivered gets the cursor after it as id.
#[derive(Debug)]
pub struct Merge {
    cursor: Cursor,
}

impl Merge {
    /// A client standing at `cursor`.
    pub fn new(cursor: Cursor) -> Self {
        Self { cursor }
    }

    /// Where the client stands.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The event at `pos`, stored or live: its id if the client has not had it.
    pub fn offer(&mut self, pos: Pos) -> Option<Cursor> {
        self.cursor.admit(pos).then_some(self.cursor)
    }
}

#[cfg(test)]
mod tests;
