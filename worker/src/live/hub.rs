//! Local live subscribers per conversation (WebSocket and SSE clients of this worker).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::view::LiveEvent;

const CAPACITY: usize = 1024;

/// Fan-out of live events to this worker's clients.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<LiveEvent>>>>,
}

// === impl Hub ===

impl Hub {
    /// Subscribes to a conversation's live events.
    pub fn subscribe(&self, conversation: &str) -> broadcast::Receiver<Arc<LiveEvent>> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(conversation.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone here watches `conversation` (the fan-out skips the rest cheaply).
    pub fn watched(&self, conversation: &str) -> bool {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(conversation).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Sends an event to the conversation's subscribers.
    pub fn publish(&self, conversation: &str, event: LiveEvent) {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(conversation) {
            let _ = tx.send(Arc::new(event));
        }
    }

    /// Forgets conversations nobody watches any more; returns those still watched.
    pub fn prune(&self) -> usize {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.len()
    }
}
