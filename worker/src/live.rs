//! Live delivery: a worker reads the tail of `chat.messages`, `chat.stream` and `chat.users` in
//! the partitions its subscribers watch (`fanout.rs`), orders each conversation's events
//! (`sequencer.rs`), and hands them to its WebSocket and SSE clients and to peers it relays to
//! (`hub.rs`). A client of a conversation another worker owns is served the owner's relayed
//! events (`relay.rs`), so a record is fetched once whatever the mesh's size. Each event carries
//! where it comes from, so a client resumes on any worker from its last event's id
//! (`cursor.rs`), the events it missed read back from the log (`catchup.rs`).

mod catchup;
pub(crate) mod cursor;
mod fanout;
#[cfg(test)]
mod fixtures;
mod hub;
mod relay;
mod sequencer;

pub use catchup::{CatchUpError, catch_up};
pub use cursor::{BadCursor, Cursor, Merge, Positioned};
pub use fanout::Fanout;
pub use hub::{Hub, NotServing};
pub use relay::{FROM_HEADER, KEEP_ALIVE, Relay, Relayed};
pub use sequencer::Sequencer;
