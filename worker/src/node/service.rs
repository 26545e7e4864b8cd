//! The HTTP API's view of a running worker: [`ChatService`] over its components.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshchat_wire::{MeshEvent, MigrateRequest, PresenceEvent, PresenceKind, SCHEMA_VERSION, UserMessage};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::drain::Drained;
use crate::http::{
    ChatService, FORWARDED, Forwarded, HttpSettings, Local, MeshView, Readiness, WorkerStatus,
};
use crate::mesh::Peer;
use crate::ownership::{Assignment, OwnerInfo};
use crate::view::{ConversationView, LiveEvent};

impl ChatService for Node {
    fn settings(&self) -> &HttpSettings {
        &self.http
    }

    async fn append(&self, message: UserMessage) -> Result<(), String> {
        self.log.append(message).await.map_err(|e| e.to_string())?;
        self.metrics.messages_in.inc();
        Ok(())
    }

    fn local_conversation(&self, id: &str) -> Local {
        if !self.held.is_live(self.log.partition_of(id)) {
            return Local::NotHere;
        }
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        match store.get(id) {
            Some(conv) => Local::Found(ConversationView::of(conv, &self.agent_name)),
            None => Local::Missing,
        }
    }

    fn owner_of(&self, id: &str) -> Option<OwnerInfo> {
        self.assignments.owner_of(self.log.partition_of(id))
    }

    async fn forward_read(&self, url: &str, id: &str) -> Result<Forwarded, String> {
        let resp = self
            .client
            .get(format!("{url}/api/chat/conversation/{id}"))
            .header(FORWARDED, &self.http.node_id)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok(Forwarded { status, body })
    }

    async fn read_log(&self, id: &str) -> Result<Option<ConversationView>, String> {
        let (log, tokenizer, limit, lookup) = (
            self.log.clone(),
            self.tokenizer.clone(),
            self.history_limit,
            id.to_string(),
        );
        let conv = tokio::task::spawn_blocking(move || {
            log.read_conversation(&lookup, limit, |t| tokenizer.count(t))
        })
        .await
        .map_err(|_| "log read failed".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(conv.map(|c| ConversationView::of(&c, &self.agent_name)))
    }

    fn subscribe(&self, conversation: &str) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.hub.subscribe(conversation)
    }

    fn presence(&self, conversation: &str, user: &str, kind: PresenceKind) {
        self.log.publish_presence(&PresenceEvent {
            v: SCHEMA_VERSION,
            conversation_id: conversation.to_string(),
            tenant: meshchat_wire::DEFAULT_TENANT.into(),
            user_id: user.to_string(),
            kind,
            timestamp: time::OffsetDateTime::now_utc(),
            node: self.http.node_id.clone(),
        });
    }

    fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    fn status(&self) -> WorkerStatus {
        let (active, resident) = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let active = store
                .iter()
                .filter(|c| !c.pending.is_empty() || c.in_flight.is_some())
                .count();
            (active, store.len())
        };
        WorkerStatus {
            load_factor: self.load.load_factor(),
            active_conversations: active,
            resident_conversations: resident,
            messages_per_second: self.load.messages_per_second(),
            uptime_secs: self.started.elapsed().as_secs(),
            held: self.held.partitions(),
            generation: self.assignments.current().generation,
            in_flight: self.load.running_now(),
            queued: self.load.queued_now(),
            concurrency_limit: self.load.limit,
        }
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            kafka: self.log.reachable(),
            caught_up: self.held.caught_up(),
            live: self.live_ready.load(Ordering::Relaxed),
            draining: self.drain.draining.load(Ordering::Relaxed),
        }
    }

    fn assignment(&self) -> Assignment {
        self.assignments.current()
    }

    fn mesh(&self) -> MeshView {
        MeshView {
            agent: self.mesh.agent().to_string(),
            table: self.mesh.table(),
            reports: self.mesh.reports(),
            heartbeat_timeout: self.mesh.heartbeat_timeout(),
            recent_moves: self.mesh.recent_moves(),
        }
    }

    fn peer(&self, id: &str) -> Peer {
        self.mesh.peer(id)
    }

    fn handoff_estimate(&self) -> Option<Duration> {
        self.mesh.handoff_estimate()
    }

    async fn request_migration(&self, request: MigrateRequest) -> Result<(), String> {
        let event = MeshEvent::MigrateRequest(request);
        let send = self.log.publish_event("migrate", &event);
        match tokio::time::timeout(Duration::from_secs(10), send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Kafka did not acknowledge the request in time".into()),
        }
    }

    async fn drain(&self) -> (Drained, usize) {
        let outcome = self.drain.drain().await;
        (outcome, self.held.partitions().len())
    }

    fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}
