//! The owner's side of the conversation index: each conversation of a held partition that
//! changed gets its entry written to `chat.index` (every second), so it shows in lists within
//! about a second of its last message.

use meshchat_wire::{IndexEntry, SCHEMA_VERSION, encode, partition_for, split_key};

use super::Owner;
use crate::store::Conversation;

impl Owner {
    /// Writes the entries of changed conversations of held partitions; one that fails stays
    /// changed and is written next time.
    pub(super) async fn write_index(&self) {
        if !self.lease.holds_now() || !self.log.reachable() {
            return;
        }
        let partitions = self.log.partitions();
        let held = self.held.partitions();
        let changed: Vec<(String, i32, Vec<u8>)> = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store
                .iter_mut()
                .filter(|c| c.index_dirty)
                .filter_map(|c| {
                    let p = partition_for(&c.key, partitions);
                    if !held.contains_key(&p) {
                        return None;
                    }
                    c.index_dirty = false;
                    match encode(&entry_of(c)) {
                        Ok(bytes) => Some((c.key.clone(), p, bytes)),
                        Err(e) => {
                            tracing::error!(conversation = %c.key, error = %e, "index entry not encodable");
                            None
                        }
                    }
                })
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        let topic = &self.log.topics().index;
        let sends = changed.iter().map(|(key, p, bytes)| async move {
            (key, self.log.producer().send(topic, *p, key, bytes).await)
        });
        let failed: Vec<&String> = futures::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(|(key, r)| match r {
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(conversation = %key, error = %e, "index entry not written; retrying");
                    Some(key)
                }
            })
            .collect();
        if !failed.is_empty() {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            for key in failed {
                if let Some(c) = store.get_mut(key) {
                    c.index_dirty = true;
                }
            }
        }
    }
}

/// What the index shows of `c`.
pub(super) fn entry_of(c: &Conversation) -> IndexEntry {
    let (tenant, id) = split_key(&c.key);
    IndexEntry {
        v: SCHEMA_VERSION,
        tenant: tenant.to_string(),
        conversation_id: id.to_string(),
        title: c.title.clone().unwrap_or_default(),
        participants: c.participants.clone(),
        last_activity_ms: c.last_activity_ms,
        message_count: c.message_count,
    }
}
