//! What the owner loop tells the machine.

use super::{Epoch, Partition};
use crate::ownership::Assignment;

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// What this worker should own changed (a new assignment table, or the static
    /// configuration at start).
    Assigned(Assignment),
    /// The old owner announced it released `partition` for `epoch`.
    ReleaseSeen {
        /// Partition.
        partition: Partition,
        /// The new ownership's epoch the release was for.
        epoch: Epoch,
    },
    /// A take-over read `partition`'s committed offset (and the fence before it, from the
    /// commit's metadata) and its snapshots.
    CommitRead {
        /// Partition.
        partition: Partition,
        /// Epoch being taken over.
        epoch: Epoch,
        /// Offset replay starts at.
        start: i64,
        /// Highest fence before `start`.
        fence: Epoch,
    },
    /// Our fence is in the log; the log ended at `end` once it was written.
    FenceWritten {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
        /// The high watermark after the fence (replay runs up to it).
        end: i64,
    },
    /// A take-over step failed (Kafka); it is retried after [`Timeouts::retry`].
    AcquireFailed {
        /// Partition.
        partition: Partition,
        /// Epoch being taken over.
        epoch: Epoch,
    },
    /// A record of `partition` was consumed at `offset`.
    Consumed {
        /// Partition.
        partition: Partition,
        /// Offset.
        offset: i64,
    },
    /// A fence of `epoch` was read in `partition`.
    FenceRead {
        /// Partition.
        partition: Partition,
        /// The fence's epoch.
        epoch: Epoch,
    },
    /// An answer of `partition` started under `epoch`.
    AnswerStarted {
        /// Partition.
        partition: Partition,
        /// Epoch it answers under.
        epoch: Epoch,
    },
    /// An answer of `partition` under `epoch` ended (written, failed or cancelled).
    AnswerEnded {
        /// Partition.
        partition: Partition,
        /// Epoch it answered under.
        epoch: Epoch,
    },
    /// A [`Effect::Release`] was carried out: snapshots and commit written (`ok`), or not.
    ReleaseWritten {
        /// Partition.
        partition: Partition,
        /// The epoch we held it at.
        epoch: Epoch,
        /// Whether the broker acknowledged the snapshots and the commit.
        ok: bool,
    },
    /// Timers: releases awaited and releases due. `lease_holds`: the heartbeat lease holds.
    Tick {
        /// The heartbeat lease holds now.
        lease_holds: bool,
    },
    /// The periodic snapshot round is due.
    SnapshotDue {
        /// The heartbeat lease holds now.
        lease_holds: bool,
    },
    /// The worker stops (its answers had their grace): the final snapshots and commit.
    Stopping {
        /// The heartbeat lease holds now.
        lease_holds: bool,
    },
}
