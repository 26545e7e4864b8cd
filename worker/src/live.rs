//! Live delivery: every worker reads the tail of `chat.messages`, `chat.stream` and `chat.users`
//! (`fanout.rs`), orders each conversation's events (`sequencer.rs`), and hands those of the
//! conversations its own WebSocket and SSE clients watch to them (`hub.rs`).

mod fanout;
mod hub;
mod sequencer;

pub use fanout::Fanout;
pub use hub::Hub;
pub use sequencer::Sequencer;
