//! Partition ownership: what this worker should own ([`AssignmentSource`]), the pure state
//! machine of every partition's lifecycle ([`PartitionMachine`]) with its read-only handle
//! ([`Held`]), the heartbeat lease that stops a cut-off worker from writing
//! ([`HeartbeatLease`]), and the two rules every reader of the log applies to replies
//! ([`Fences`], [`verdict`]).

mod assignment;
mod fences;
mod held;
mod lease;
mod machine;

pub use assignment::{Assignment, AssignmentSource, OwnerInfo};
pub use fences::{Fences, Verdict, verdict, void};
pub use held::Held;
pub use lease::HeartbeatLease;
pub use machine::{Abandon, Announcement, Effect, Event, HeldPartition, PartitionMachine, Phase, Timeouts};

/// A partition of `chat.messages` (the placement unit).
pub type Partition = i32;
/// An ownership epoch: increases on every owner change of a partition (the fencing token).
pub type Epoch = u64;
