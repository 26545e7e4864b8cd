//! What the machine tells the owner loop to do.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Epoch, Partition};

/// What the owner loop must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Read `partition`'s committed offset and snapshots (after `after`), then report
    /// [`Event::CommitRead`] (keeping the snapshots) or [`Event::AcquireFailed`].
    ReadCommit {
        /// Partition.
        partition: Partition,
        /// Epoch being taken over.
        epoch: Epoch,
        /// Wait this long first (a retry).
        after: Duration,
    },
    /// Write our fence into `partition` and read the log's end, then report
    /// [`Event::FenceWritten`] or [`Event::AcquireFailed`].
    WriteFence {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
    },
    /// Install the snapshots read for `partition` and start its fence at `fence`.
    Restore {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
        /// Highest fence before where replay starts.
        fence: Epoch,
    },
    /// Consume exactly these partitions from these offsets.
    Assign {
        /// Partition → next offset.
        positions: BTreeMap<Partition, i64>,
    },
    /// Apply the consumed record to the conversations; with `answer_at`, the partition is live
    /// and answers may start under that epoch.
    Apply {
        /// Partition.
        partition: Partition,
        /// Offset.
        offset: i64,
        /// Epoch to answer under, when live.
        answer_at: Option<Epoch>,
    },
    /// Start answering every conversation of `partition` with unanswered messages.
    StartAnswers {
        /// Partition.
        partition: Partition,
        /// Epoch to answer under.
        epoch: Epoch,
    },
    /// Cancel `partition`'s answers.
    CancelAnswers {
        /// Partition.
        partition: Partition,
    },
    /// Write snapshots of the changed conversations of these partitions, then commit these
    /// offsets (everything before them is in the snapshots). `wait`: for the broker.
    SnapshotAndCommit {
        /// Partition → (next offset, epoch held at).
        positions: BTreeMap<Partition, (i64, Epoch)>,
        /// Wait for the acknowledgements (releases and the final round).
        wait: bool,
    },
    /// Snapshot and commit `partition` at `position` and wait for the broker, then report
    /// [`Event::ReleaseWritten`].
    Release {
        /// Partition.
        partition: Partition,
        /// The epoch we held it at.
        epoch: Epoch,
        /// Next offset.
        position: i64,
    },
    /// Drop `partition`'s conversations, its fence and anything kept for its take-over.
    Forget {
        /// Partition.
        partition: Partition,
    },
    /// Publish a handoff step on `chat.events`.
    Announce(Announcement),
    /// `partition` is dropped without another write (for the log; what follows does the work).
    Abandon {
        /// Partition.
        partition: Partition,
        /// Why.
        why: Abandon,
    },
}

/// Why a partition is dropped without a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// A newer owner's fence (of this epoch) was read: this worker is a zombie for it.
    NewerFence(Epoch),
    /// The balancer moved it by failover: the new owner fenced without waiting for us.
    Failover,
    /// The heartbeat lease lapsed: this worker may have been declared dead.
    LeaseLapsed,
}

/// A handoff step to publish.
#[derive(Clone, Debug, PartialEq)]
pub enum Announcement {
    /// We stop starting answers for `partition`; `to` takes it over at `to_epoch`.
    Releasing {
        /// Partition.
        partition: Partition,
        /// The new owner.
        to: String,
        /// The new ownership's epoch.
        to_epoch: Epoch,
    },
    /// We committed `partition` at `committed` and let it go.
    Released {
        /// Partition.
        partition: Partition,
        /// The new owner.
        to: String,
        /// The new ownership's epoch.
        to_epoch: Epoch,
        /// The committed offset.
        committed: i64,
    },
    /// We replayed `partition` and answer it.
    Live {
        /// Partition.
        partition: Partition,
        /// Our epoch.
        epoch: Epoch,
        /// Records replayed.
        replayed: u64,
        /// From the take-over's start (release awaited, if any) to live.
        took: Duration,
    },
}
