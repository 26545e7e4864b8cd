//! Where a partition is in its lifecycle, how it leaves, and the steps between (the state diagram
//! in docs/architecture.md).

use crate::ownership::Epoch;

/// Where a held partition is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Assigned here by a planned move: waiting for the old owner's release.
    Wanted,
    /// Taking over: reading the old owner's commit and snapshots, then writing our fence.
    Acquiring,
    /// Replaying the log from the commit through our fence; nothing is answered yet.
    Replaying,
    /// Answering and serving reads.
    Live,
    /// Being handed away: no new answers; in-flight ones may finish until the grace ends.
    Releasing,
}

/// How a partition left this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exit {
    /// Snapshotted, committed and announced: the new owner starts from our commit.
    Released,
    /// Dropped without a write: a newer owner fenced us, took over by failover, or our lease
    /// lapsed (or it was never served).
    Abandoned,
}

impl Phase {
    /// Every phase, in lifecycle order.
    #[cfg(test)]
    pub const ALL: [Phase; 5] = [
        Phase::Wanted,
        Phase::Acquiring,
        Phase::Replaying,
        Phase::Live,
        Phase::Releasing,
    ];

    /// The name the architecture document's state diagram uses.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Wanted => "wanted",
            Phase::Acquiring => "acquiring",
            Phase::Replaying => "replaying",
            Phase::Live => "live",
            Phase::Releasing => "releasing",
        }
    }
}

impl Exit {
    /// The name the architecture document's state diagram uses.
    #[cfg(test)]
    pub fn name(self) -> &'static str {
        match self {
            Exit::Released => "released",
            Exit::Abandoned => "abandoned",
        }
    }
}

/// A step of the lifecycle: into a phase (from another, or from not held), or out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Into a phase.
    To(Option<Phase>, Phase),
    /// Out of this worker.
    Out(Phase, Exit),
}

/// Every step the machine can take (the state diagram in docs/architecture.md shows exactly
/// these; the tests check both the machine and the document against this list).
#[cfg(test)]
pub const TRANSITIONS: &[Step] = {
    use Exit as X;
    use Phase as P;
    &[
        Step::To(None, P::Wanted),
        Step::To(None, P::Acquiring),
        Step::To(Some(P::Wanted), P::Acquiring),
        Step::To(Some(P::Acquiring), P::Replaying),
        Step::To(Some(P::Acquiring), P::Live),
        Step::To(Some(P::Replaying), P::Live),
        Step::To(Some(P::Replaying), P::Releasing),
        Step::To(Some(P::Live), P::Releasing),
        Step::Out(P::Releasing, X::Released),
        Step::Out(P::Releasing, X::Abandoned),
        Step::Out(P::Wanted, X::Abandoned),
        Step::Out(P::Acquiring, X::Abandoned),
    ]
};

/// One held partition as the rest of the worker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldPartition {
    /// Epoch it is held at.
    pub epoch: Epoch,
    /// Phase.
    pub phase: Phase,
    /// Answers in flight.
    pub answers: u32,
    /// Replies, snapshots and commits may be written under `epoch` (not abandoned, lease held).
    pub writable: bool,
}
