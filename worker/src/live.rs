//! Live delivery: every worker reads the tail of `chat.messages`, `chat.stream` and
//! `chat.users` and hands events of the conversations its own clients watch to them, in order.

mod fanout;
mod sequencer;

pub use fanout::{FanoutSource, run_fanout};
pub use sequencer::Sequencer;
