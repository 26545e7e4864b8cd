//! Live delivery: every worker reads the tail of `chat.messages`, `chat.stream` and `chat.users`
//! (`fanout.rs`), orders each conversation's events (`sequencer.rs`), and hands those of the
//! conversations its own WebSocket and SSE clients watch to them (`hub.rs`). Each event carries
//! where it comes from, so a client resumes on any worker from its last event's id
//! (`cursor.rs`), the events it missed read back from the log (`catchup.rs`).

mod catchup;
pub(crate) mod cursor;
mod fanout;
#[cfg(test)]
mod fixtures;
mod hub;
mod sequencer;

pub use catchup::{CatchUpError, catch_up};
pub use cursor::{BadCursor, Cursor, Merge, Positioned};
pub use fanout::Fanout;
pub use hub::Hub;
pub use sequencer::Sequencer;
