//! The trace contexts of user messages read and not yet answered: an answer started later (its
//! conversation's earlier messages first) continues the trace its message came with.

use std::collections::{HashMap, VecDeque};

use opentelemetry::Context;

use crate::ownership::Partition;

/// Most contexts kept; beyond, the oldest go (their answers start a trace of their own).
const CAP: usize = 16_384;

/// Contexts by (partition, offset) of the user message.
#[derive(Default)]
pub(super) struct Pending {
    by_message: HashMap<(Partition, i64), Context>,
    /// Insertion order, for the cap (may name messages already taken).
    order: VecDeque<(Partition, i64)>,
}

impl Pending {
    /// The message at `offset` of `p` came with `cx`.
    pub(super) fn insert(&mut self, p: Partition, offset: i64, cx: Context) {
        if self.by_message.insert((p, offset), cx).is_none() {
            self.order.push_back((p, offset));
        }
        while self.by_message.len() > CAP {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.by_message.remove(&oldest);
                }
                None => break,
            }
        }
        // taken entries linger in `order`; keep it near the map's size
        if self.order.len() > 2 * CAP {
            let kept = &self.by_message;
            self.order.retain(|k| kept.contains_key(k));
        }
    }

    /// The context the message at `offset` of `p` came with, if it came with one.
    pub(super) fn take(&mut self, p: Partition, offset: i64) -> Option<Context> {
        self.by_message.remove(&(p, offset))
    }

    /// `p` went away.
    pub(super) fn forget(&mut self, p: Partition) {
        self.by_message.retain(|(q, _), _| *q != p);
        self.order.retain(|(q, _)| *q != p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_taken_once_forgotten_with_their_partition_and_capped() {
        let mut pending = Pending::default();
        pending.insert(1, 10, Context::new());
        pending.insert(2, 10, Context::new());
        assert!(pending.take(1, 10).is_some());
        assert!(pending.take(1, 10).is_none(), "taken once");
        pending.forget(2);
        assert!(pending.take(2, 10).is_none(), "forgotten with its partition");
        for offset in 0..(CAP as i64 + 100) {
            pending.insert(3, offset, Context::new());
        }
        assert_eq!(pending.by_message.len(), CAP);
        assert!(pending.take(3, 0).is_none(), "the oldest went first");
        assert!(pending.take(3, CAP as i64 + 99).is_some(), "the newest stayed");
        // many taken: the order list does not grow without bound
        for offset in 0..(4 * CAP as i64) {
            pending.insert(4, offset, Context::new());
            pending.take(4, offset);
        }
        assert!(pending.order.len() <= 2 * CAP + 1);
    }
}
