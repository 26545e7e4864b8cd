//! The one seam that answers "which partitions should I own, at which epoch, and who owns the
//! others". The source is configuration (static mode) or the balancer's assignment table
//! (dynamic mode); callers read [`Assignment`]s and watch for changes, never the source.

use std::collections::BTreeMap;
use std::time::Duration;

use meshchat_wire::AssignmentTable;

use super::{Epoch, Partition};
use tokio::sync::watch;

use crate::config::Peer;

/// A partition's owner as the source knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    /// Worker id.
    pub node_id: String,
    /// Base URL of its internal listener (where reads are forwarded), when known.
    pub internal_url: Option<String>,
    /// Epoch of this ownership.
    pub epoch: Epoch,
    /// Previous owner, when the ownership began with a move.
    pub from: Option<String>,
    /// The previous owner was declared dead: no release to wait for.
    pub failover: bool,
}

/// One consistent picture of who owns what.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    /// Assignment generation this comes from (0 = static configuration).
    pub generation: u64,
    /// Partitions this worker should own, with their epochs.
    pub owned: BTreeMap<Partition, Epoch>,
    /// Known owner of every partition (this worker included).
    pub owners: BTreeMap<Partition, OwnerInfo>,
    /// The balancer's heartbeat timeout (from its table; `None` with static ownership, where
    /// nobody declares a worker dead).
    pub heartbeat_timeout: Option<Duration>,
}

/// Where assignments come from, and who is told about them.
#[derive(Debug)]
pub struct AssignmentSource {
    tx: watch::Sender<Assignment>,
    node_id: String,
}

// === impl AssignmentSource ===

impl AssignmentSource {
    /// Ownership fixed by configuration: this worker (internal listener at `url`) owns `owned`
    /// at epoch 1; peers own theirs.
    pub fn fixed(node_id: &str, url: &str, owned: &[Partition], peers: &[Peer]) -> Self {
        let mut view = Assignment::default();
        let info = |id: &str, url: &str| OwnerInfo {
            node_id: id.to_string(),
            internal_url: Some(url.to_string()),
            epoch: 1,
            from: None,
            failover: false,
        };
        for peer in peers {
            for p in &peer.partitions {
                view.owners.insert(*p, info(&peer.node_id, &peer.url));
            }
        }
        for p in owned {
            view.owned.insert(*p, 1);
            view.owners.insert(*p, info(node_id, url));
        }
        Self {
            tx: watch::Sender::new(view),
            node_id: node_id.to_string(),
        }
    }

    /// Nothing owned until the balancer's first table arrives.
    pub fn dynamic(node_id: &str) -> Self {
        Self {
            tx: watch::Sender::new(Assignment::default()),
            node_id: node_id.to_string(),
        }
    }

    /// The current assignment.
    pub fn current(&self) -> Assignment {
        self.tx.borrow().clone()
    }

    /// Who owns `partition`, if known.
    pub fn owner_of(&self, partition: Partition) -> Option<OwnerInfo> {
        self.tx.borrow().owners.get(&partition).cloned()
    }

    /// Changes to ownership.
    pub fn subscribe(&self) -> watch::Receiver<Assignment> {
        self.tx.subscribe()
    }

    /// Applies a newer assignment table; older or equal generations are ignored.
    pub fn apply_table(&self, table: &AssignmentTable) -> bool {
        let me = self.node_id.clone();
        self.tx.send_if_modified(|view| {
            if table.generation <= view.generation {
                return false;
            }
            *view = assignment_of(&me, table);
            true
        })
    }
}

/// `table` as worker `me` sees it.
pub fn assignment_of(me: &str, table: &AssignmentTable) -> Assignment {
    let mut view = Assignment {
        generation: table.generation,
        heartbeat_timeout: Some(Duration::from_millis(table.heartbeat_timeout_ms)),
        ..Default::default()
    };
    for a in &table.partitions {
        let internal_url = table
            .workers
            .get(&a.owner)
            .and_then(|w| w.internal_address.clone());
        view.owners.insert(
            a.partition,
            OwnerInfo {
                node_id: a.owner.clone(),
                internal_url,
                epoch: a.epoch,
                from: a.from.clone(),
                failover: a.failover,
            },
        );
        if a.owner == me {
            view.owned.insert(a.partition, a.epoch);
        }
    }
    view
}
