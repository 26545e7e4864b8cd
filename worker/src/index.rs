//! The conversation index: what `GET /api/chat/conversations` lists. Owners write one entry
//! per conversation to compacted `chat.index` when it changes (`owner/index.rs`); every worker
//! reads the whole topic into memory (`follow.rs`, `table.rs`) and answers lists from it.

mod follow;
mod table;

pub use follow::IndexFollower;
pub use table::{ConversationIndex, ListCursor, Page};
