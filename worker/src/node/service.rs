//! The HTTP API's view of a running worker: [`ChatService`] over its components.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshchat_wire::kafka::KafkaError;
use meshchat_wire::{
    MeshEvent, MigrateRequest, PresenceEvent, PresenceKind, SCHEMA_VERSION, UserMessage, partition_for,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::auth::Authenticator;
use crate::drain::{Drained, UndoRefused};
use crate::http::{
    ChatService, FORWARDED, Forwarded, HttpSettings, IndexLoading, Local, Membership, MeshView, Readiness,
    WorkerStatus,
};
use crate::index::{ListCursor, Page};
use crate::limits::Limits;
use crate::live::{self, CatchUpError, Cursor, NotServing, Positioned, Relay};

/// How long a relayed live stream may take to start (the owner may first start reading the
/// partition, and read a resume back).
const RELAY_OPEN: Duration = Duration::from_secs(10);
use crate::mesh::Peer;
use crate::ownership::{Assignment, OwnerInfo};
use crate::view::ConversationView;
use meshchat_wire::worker::paths;

impl ChatService for Node {
    fn settings(&self) -> &HttpSettings {
        &self.http
    }

    fn auth(&self) -> &Authenticator {
        &self.auth
    }

    async fn membership(&self, key: &str, user: &str) -> Result<Membership, String> {
        if self.members.get(&(key.to_string(), user.to_string())).is_some() {
            return Ok(Membership::Member);
        }
        self.wake(key).await;
        let answer = self.ask_membership(key, user).await?;
        if answer == Membership::Member {
            self.joined(key, user);
        }
        Ok(answer)
    }

    fn local_membership(&self, key: &str, user: &str) -> Option<Membership> {
        if !self.held.is_live(self.log.partition_of(key)) {
            return None;
        }
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        // evicted and not brought back (Kafka away): not known here, the log answers
        if store.evicted(key).is_some() {
            return None;
        }
        Some(Membership::of(
            store.get(key).map(|c| c.participants.as_slice()),
            user,
        ))
    }

    fn joined(&self, key: &str, user: &str) {
        let pair = (key.to_string(), user.to_string());
        // every send lands here: a read is cheaper than replacing an entry already known
        if self.members.get(&pair).is_none() {
            self.members.insert(pair, ());
        }
    }

    fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    fn backlog(&self, key: &str) -> Option<i64> {
        let p = self.log.partition_of(key);
        if self.held.is_live(p) {
            return Some(self.load.total_lag());
        }
        let owner = self.assignments.owner_of(p)?;
        self.mesh.lag_of(&owner.node_id)
    }

    fn admit_migration(&self, tenant: &str) -> Result<(), Duration> {
        use governor::clock::{Clock, DefaultClock};
        self.migrations
            .check_key(&tenant.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    async fn append_record(&self, record: meshchat_wire::ChatRecord) -> Result<(), String> {
        self.log.append_record(&record).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn append(&self, message: UserMessage) -> Result<(), String> {
        self.log.append(message).await.map_err(|e| e.to_string())?;
        self.metrics.messages_in.inc();
        Ok(())
    }

    async fn wake(&self, key: &str) {
        let evicted = self.store.read().unwrap_or_else(|p| p.into_inner()).evicted(key);
        let Some((p, offset)) = evicted else { return };
        let (log, tokenizer, keep, lookup) = (
            self.log.clone(),
            self.tokenizer.clone(),
            self.keep,
            key.to_string(),
        );
        let back = tokio::task::spawn_blocking(move || {
            log.bring_back(&lookup, p, offset, keep, |t| tokenizer.count(t))
        })
        .await;
        match back {
            Ok(Ok(Some(conv))) => {
                let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
                // only while the partition is still this worker's: else the index is stale
                if store.evicted(key).is_some() {
                    store.restore(conv);
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(conversation = %key, error = %e, "could not bring an evicted conversation back")
            }
            Err(e) => tracing::warn!(conversation = %key, error = %e, "bringing a conversation back failed"),
        }
    }

    fn local_conversation(&self, id: &str) -> Local {
        if !self.held.is_live(self.log.partition_of(id)) {
            return Local::NotHere;
        }
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        match store.get(id) {
            Some(conv) => Local::Found(ConversationView::of(conv, &self.agent_name)),
            None if store.evicted(id).is_some() => Local::NotHere,
            None => Local::Missing,
        }
    }

    fn owner_of(&self, id: &str) -> Option<OwnerInfo> {
        self.assignments.owner_of(self.log.partition_of(id))
    }

    async fn forward_read(&self, url: &str, key: &str) -> Result<Forwarded, String> {
        let request = self
            .client
            .get(format!("{url}{}/{key}", paths::FORWARDED_READ))
            .header(FORWARDED, &self.http.node_id);
        let request = match &self.http.mesh_secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        };
        let resp = request.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok(Forwarded { status, body })
    }

    async fn read_log(&self, id: &str) -> Result<Option<ConversationView>, String> {
        let (log, tokenizer, limit, lookup) = (
            self.log.clone(),
            self.tokenizer.clone(),
            self.keep,
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

    fn list_conversations(
        &self,
        tenant: &str,
        user: Option<&str>,
        after: Option<ListCursor>,
        limit: usize,
    ) -> Result<Page, IndexLoading> {
        if !self.index_loaded.load(Ordering::Relaxed) {
            return Err(IndexLoading);
        }
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        Ok(index.list(tenant, user, after, limit))
    }

    async fn read_history(&self, id: &str) -> Result<Option<ConversationView>, String> {
        let (log, tokenizer, key) = (self.log.clone(), self.tokenizer.clone(), id.to_string());
        let conv = tokio::task::spawn_blocking(move || log.read_history(&key, |t| tokenizer.count(t)))
            .await
            .map_err(|_| "log read failed".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(conv.map(|c| ConversationView::of(&c, &self.agent_name)))
    }

    async fn subscribe(
        &self,
        conversation: &str,
    ) -> Result<(broadcast::Receiver<Arc<Positioned>>, Cursor), NotServing> {
        self.hub
            .subscribe(conversation, partition_for(conversation, self.log.partitions()))
            .await
    }

    async fn relay(&self, url: &str, key: &str, after: Option<Cursor>) -> Result<Relay, String> {
        let mut request = self
            .relay_client
            .get(format!("{url}{}/{key}", paths::LIVE_RELAY))
            .header(FORWARDED, &self.http.node_id);
        if let Some(after) = after {
            request = request.query(&[("after", after.to_string())]);
        }
        if let Some(secret) = &self.http.mesh_secret {
            request = request.bearer_auth(secret);
        }
        // the owner answers once its fan-out reads the partition (and a resume was read back)
        let resp = tokio::time::timeout(RELAY_OPEN, request.send())
            .await
            .map_err(|_| format!("no answer within {} s", RELAY_OPEN.as_secs()))?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let from = resp
            .headers()
            .get(live::FROM_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Cursor>().ok())
            .ok_or_else(|| format!("no {} header", live::FROM_HEADER))?;
        Ok(Relay::read(from, resp.bytes_stream()))
    }

    async fn catch_up(&self, conversation: &str, from: Cursor) -> Result<Vec<Positioned>, CatchUpError> {
        let (log, hub, key) = (self.log.clone(), self.hub.clone(), conversation.to_string());
        tokio::task::spawn_blocking(move || {
            let p = partition_for(&key, log.partitions());
            live::catch_up(log.kafka(), log.topics(), p, &key, from, &hub)
        })
        .await
        .map_err(|_| {
            CatchUpError::Kafka(KafkaError::Timeout {
                what: "reading a conversation back",
            })
        })?
    }

    fn presence(&self, tenant: &str, conversation: &str, user: &str, kind: PresenceKind) {
        self.log.publish_presence(&PresenceEvent {
            v: SCHEMA_VERSION,
            conversation_id: conversation.to_string(),
            tenant: tenant.to_string(),
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
        let (active, resident, evicted) = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let active = store
                .iter()
                .filter(|c| !c.pending.is_empty() || c.in_flight.is_some())
                .count();
            (active, store.len(), store.evicted_len())
        };
        WorkerStatus {
            load_factor: self.load.load_factor(),
            active_conversations: active,
            resident_conversations: resident,
            evicted_conversations: evicted,
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
            refused_migrations: self.mesh.recent_refusals(),
            load_history: self.mesh.load_history(),
        }
    }

    fn mesh_addresses(&self) -> Vec<String> {
        self.mesh.addresses()
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

    fn undo_drain(&self) -> Result<bool, UndoRefused> {
        self.drain.undo()
    }

    fn http_metrics(&self) -> Option<crate::metrics::HttpMetrics> {
        Some(self.metrics.http.clone())
    }

    fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        self.metrics
            .live_streams
            .set(i64::from(self.limits.streams_open()));
        self.metrics
            .live_partitions
            .set(i64::try_from(self.hub.read_partitions()).unwrap_or(i64::MAX));
        {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            self.metrics.conversations_resident.set(store.len() as i64);
            self.metrics.conversations_evicted.set(store.evicted_len() as i64);
        }
        let replaced = self.log.producer().replacements();
        self.metrics
            .producer_replacements
            .set(i64::try_from(replaced).unwrap_or(i64::MAX));
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}

impl Node {
    /// Membership from memory, else the owner's internal listener, else the log.
    async fn ask_membership(&self, key: &str, user: &str) -> Result<Membership, String> {
        if let Some(m) = self.local_membership(key, user) {
            return Ok(m);
        }
        if let Some(owner) = self.owner_of(key)
            && owner.node_id != self.http.node_id
            && let Some(url) = owner.internal_url
        {
            match self.ask_owner(&url, key, user).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::warn!(owner = %owner.node_id, error = %e, "owner could not answer a membership check; reading the log")
                }
            }
        }
        let view = self.read_log(key).await?;
        Ok(Membership::of(
            view.as_ref().map(|v| v.participants.as_slice()),
            user,
        ))
    }

    async fn ask_owner(&self, url: &str, key: &str, user: &str) -> Result<Membership, String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            membership: Membership,
        }
        let request = self
            .client
            .get(format!("{url}{}/{key}", paths::MEMBERSHIP))
            .query(&[("user", user)])
            .header(FORWARDED, &self.http.node_id);
        let request = match &self.http.mesh_secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        };
        let resp = request.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let answer: Answer = resp.json().await.map_err(|e| e.to_string())?;
        Ok(answer.membership)
    }
}
