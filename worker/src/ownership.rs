//! The one seam that answers "which partitions do I own, and who owns the others".
//! Today the answer comes from configuration (static); the balancer replaces the source
//! without touching callers, which read views and watch for changes.

use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::config::Peer;

/// Where a partition's owner can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    /// Worker id.
    pub node_id: String,
    /// Base URL.
    pub url: String,
}

/// One consistent picture of ownership.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnershipView {
    /// Assignment generation this view comes from.
    pub generation: u64,
    /// Partitions this worker owns, with their epochs.
    pub owned: BTreeMap<i32, u64>,
    /// Known owner of every partition (this worker included).
    pub owners: BTreeMap<i32, OwnerInfo>,
}

/// Shared ownership state.
#[derive(Debug)]
pub struct Ownership {
    tx: watch::Sender<OwnershipView>,
}

// === impl Ownership ===

impl Ownership {
    /// Ownership fixed by configuration: this worker owns `owned` at epoch 1; peers own theirs.
    pub fn fixed(node_id: &str, url: &str, owned: &[i32], peers: &[Peer]) -> Self {
        let mut view = OwnershipView {
            generation: 0,
            ..Default::default()
        };
        for peer in peers {
            for p in &peer.partitions {
                view.owners.insert(
                    *p,
                    OwnerInfo {
                        node_id: peer.node_id.clone(),
                        url: peer.url.clone(),
                    },
                );
            }
        }
        for p in owned {
            view.owned.insert(*p, 1);
            view.owners.insert(
                *p,
                OwnerInfo {
                    node_id: node_id.to_string(),
                    url: url.to_string(),
                },
            );
        }
        Self {
            tx: watch::Sender::new(view),
        }
    }

    /// The current view.
    pub fn view(&self) -> OwnershipView {
        self.tx.borrow().clone()
    }

    /// Epoch under which this worker owns `partition`, if it does.
    pub fn epoch_of(&self, partition: i32) -> Option<u64> {
        self.tx.borrow().owned.get(&partition).copied()
    }

    /// Who owns `partition`, if known.
    pub fn owner_of(&self, partition: i32) -> Option<OwnerInfo> {
        self.tx.borrow().owners.get(&partition).cloned()
    }

    /// Partitions owned now.
    pub fn owned(&self) -> Vec<i32> {
        self.tx.borrow().owned.keys().copied().collect()
    }

    /// Changes to ownership.
    pub fn subscribe(&self) -> watch::Receiver<OwnershipView> {
        self.tx.subscribe()
    }

    /// Replaces the view (the dynamic source's entry point).
    pub fn replace(&self, view: OwnershipView) {
        self.tx.send_replace(view);
    }
}
