//! The two rules that decide whether a reply counts, in one place for every reader of
//! `chat.messages` (the owner's store, live delivery, the log-read path):
//! - **fences**: a reply (or a token chunk) written under an epoch below the highest fence read
//!   before it in its partition is a zombie's, void;
//! - **first reply wins**: a reply to a message that already has one is a duplicate.

use std::collections::HashMap;

use super::{Epoch, Partition};

/// Highest fence epoch read per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fences {
    highest: HashMap<Partition, Epoch>,
}

/// What a reader does with a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first reply to its message, from a valid owner: it counts.
    Counts,
    /// Written under an epoch older than the partition's latest fence: dropped.
    Void,
    /// Its message already has a reply: dropped.
    Duplicate,
}

/// The verdict on a reply to message `in_reply_to` written under `epoch`, read where the
/// partition's latest fence is `fence`; `answered` says whether that message has a reply
/// already. A void reply is void whether or not it would also be a duplicate.
pub fn verdict(
    fence: Epoch,
    epoch: Epoch,
    in_reply_to: &str,
    answered: impl FnOnce(&str) -> bool,
) -> Verdict {
    if void(fence, epoch) {
        Verdict::Void
    } else if answered(in_reply_to) {
        Verdict::Duplicate
    } else {
        Verdict::Counts
    }
}

/// Whether something written under `epoch` (a reply, a token chunk) is void where the
/// partition's latest fence is `fence`.
pub fn void(fence: Epoch, epoch: Epoch) -> bool {
    epoch < fence
}

// === impl Fences ===

impl Fences {
    /// A fence of `epoch` was read in `partition`; returns the partition's latest fence.
    pub fn observe(&mut self, partition: Partition, epoch: Epoch) -> Epoch {
        let e = self.highest.entry(partition).or_default();
        *e = (*e).max(epoch);
        *e
    }

    /// The latest fence read in `partition` (0: none).
    pub fn get(&self, partition: Partition) -> Epoch {
        self.highest.get(&partition).copied().unwrap_or(0)
    }

    /// Forgets `partition` (released: a later owner reads its fences again).
    pub fn forget(&mut self, partition: Partition) {
        self.highest.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_below_the_fence_is_void_and_a_second_one_a_duplicate() {
        let mut f = Fences::default();
        assert_eq!(f.observe(3, 2), 2);
        assert_eq!(f.observe(3, 1), 2, "the highest fence stays");
        assert_eq!(f.get(4), 0, "per partition");
        let unanswered = |_: &str| false;
        let answered = |_: &str| true;
        assert_eq!(verdict(f.get(3), 1, "m", unanswered), Verdict::Void);
        assert_eq!(verdict(f.get(3), 1, "m", answered), Verdict::Void, "void wins");
        assert_eq!(verdict(f.get(3), 2, "m", unanswered), Verdict::Counts);
        assert_eq!(verdict(f.get(3), 3, "m", answered), Verdict::Duplicate);
        assert!(void(f.get(3), 1) && !void(f.get(3), 2) && !void(f.get(4), 0));
        f.forget(3);
        assert_eq!(f.get(3), 0);
    }
}
