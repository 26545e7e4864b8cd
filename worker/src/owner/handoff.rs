//! Taking partitions over and handing them away.

use std::time::{Duration, Instant};

use meshchat_crds::{
    ChatRecord, ConversationSnapshot, EpochFence, FENCE_KEY, HandoffEvent, MeshEvent, SCHEMA_VERSION, encode,
    partition_for,
};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use time::OffsetDateTime;

use super::{OwnerLoop, Part, Run, State};
use crate::held::Phase;
use crate::kafka::{KafkaError, META_TIMEOUT, commit_start, restore_snapshots};
use crate::store::Conversation;

/// The record that fences partition `p` at `epoch` for `owner`: replies of older epochs after
/// it are void.
pub(super) fn fence(p: i32, epoch: u64, owner: &str) -> ChatRecord {
    ChatRecord::EpochFence(EpochFence {
        v: SCHEMA_VERSION,
        partition: p,
        epoch,
        owner: owner.to_string(),
        timestamp: OffsetDateTime::now_utc(),
    })
}

/// A finished acquire: what to restore and where to replay from.
pub struct Acquired {
    partition: i32,
    epoch: u64,
    snapshots: Vec<ConversationSnapshot>,
    start: i64,
    /// Highest fence before `start`, from the commit's metadata.
    fence: u64,
    target: i64,
    /// Milliseconds spent reading the commit and snapshots, and writing the fence.
    reads_ms: u64,
    fence_ms: u64,
}

// === impl OwnerLoop ===

impl OwnerLoop {
    /// Fences the partition and reads what replay needs, off the loop.
    pub(super) fn spawn_acquire(&self, p: i32, epoch: u64, run: &Run) {
        self.spawn_acquire_after(p, epoch, run, Duration::ZERO);
    }

    fn spawn_acquire_after(&self, p: i32, epoch: u64, run: &Run, delay: Duration) {
        let tx = run.acquired_tx.clone();
        let (topics, producer) = (self.topics.clone(), self.producer.clone());
        let (readers, me) = (run.readers.clone(), self.node_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let fence = fence(p, epoch, &me);
            // What the old owner committed and snapshotted is read BEFORE the fence: every
            // reply behind that commit was then written before the fence, so none of them is
            // void. An old owner still running (a zombie, or one declared dead by mistake)
            // may commit later, after replies the fence voids; we never read that commit.
            let result = async {
                let began = Instant::now();
                let t = topics.clone();
                let pool = readers.clone();
                let (snapshots, start, fence_before, r) = tokio::task::spawn_blocking(move || {
                    let r = pool.take()?;
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&t.messages, p);
                    let committed = r.committed_offsets(tpl, META_TIMEOUT)?;
                    let (low, _) = r.fetch_watermarks(&t.messages, p, META_TIMEOUT)?;
                    let (start, fence_before) = commit_start(&committed, &t.messages, p, low);
                    let snapshots = restore_snapshots(&r, &t.conversations, &[p])?;
                    Ok::<_, KafkaError>((snapshots, start, fence_before, r))
                })
                .await
                .map_err(|_| KafkaError::Timeout { what: "acquire" })??;
                let reads_ms = began.elapsed().as_millis() as u64;
                producer
                    .send(&topics.messages, p, FENCE_KEY, &encode(&fence)?)
                    .await?;
                let fence_ms = began.elapsed().as_millis() as u64 - reads_ms;
                // the replay runs to the end as it is now, the fence included
                let t = topics.clone();
                let high = tokio::task::spawn_blocking(move || {
                    let (_, high) = r.fetch_watermarks(&t.messages, p, META_TIMEOUT)?;
                    readers.give(r);
                    Ok::<_, KafkaError>(high)
                })
                .await
                .map_err(|_| KafkaError::Timeout { what: "acquire" })??;
                Ok(Acquired {
                    partition: p,
                    epoch,
                    snapshots: snapshots.into_values().collect(),
                    start,
                    fence: fence_before,
                    target: high,
                    reads_ms,
                    fence_ms,
                })
            }
            .await;
            let _ = tx.send(result.map_err(|e| (p, epoch, e))).await;
        });
    }

    /// Installs a finished acquire: restore, then replay from the committed offset.
    pub(super) fn on_acquired(
        &self,
        done: Result<Acquired, (i32, u64, KafkaError)>,
        run: &mut Run,
        consumer: &StreamConsumer,
    ) -> Result<(), KafkaError> {
        let a = match done {
            Ok(a) => a,
            Err((p, epoch, e)) => {
                tracing::warn!(partition = p, error = %e, "take-over failed; retrying");
                if run
                    .parts
                    .get(&p)
                    .is_some_and(|part| part.epoch == epoch && matches!(part.state, State::Acquiring(_)))
                {
                    self.spawn_acquire_after(p, epoch, run, Duration::from_secs(1));
                }
                return Ok(());
            }
        };
        let Some(part) = run.parts.get_mut(&a.partition) else {
            return Ok(());
        };
        let State::Acquiring(since) = part.state else {
            return Ok(());
        };
        if part.epoch != a.epoch {
            return Ok(());
        }
        {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.seed_fence(a.partition, a.fence);
            for s in a.snapshots {
                store.restore(Conversation::from_snapshot(s, |t| self.tokenizer.count(t)));
            }
        }
        part.position = Some(a.start);
        tracing::info!(
            partition = a.partition,
            epoch = a.epoch,
            start = a.start,
            target = a.target,
            reads_ms = a.reads_ms,
            fence_ms = a.fence_ms,
            "replaying"
        );
        if a.start >= a.target {
            part.state = State::Live;
            self.held.set(a.partition, a.epoch, Phase::Live);
            self.went_live(a.partition, a.epoch, since, 0);
            self.start_partition(a.partition, run);
        } else {
            part.state = State::Replaying {
                start: a.start,
                target: a.target,
                since,
            };
            self.held.set(a.partition, a.epoch, Phase::Replaying);
        }
        self.assign(consumer, run)?;
        self.update_caught_up(run);
        Ok(())
    }

    /// A partition finished its replay.
    pub(super) fn went_live(&self, p: i32, epoch: u64, since: Instant, replayed: u64) {
        let took = since.elapsed();
        self.mesh.record_handoff(took);
        tracing::info!(
            partition = p,
            epoch,
            took_ms = took.as_millis() as u64,
            "partition live"
        );
        self.publish_handoff(HandoffEvent {
            replayed: Some(replayed),
            ..self.handoff(p, epoch, "", &self.node_id, "live")
        });
    }

    /// Answers of `p` still running.
    pub(super) fn in_flight_of(&self, p: i32) -> i64 {
        self.stats.in_flight_of(p)
    }

    /// Ends a release: cancel what is left, snapshot, commit, announce, forget.
    pub(super) async fn finish_release(
        &self,
        p: i32,
        run: &mut Run,
        consumer: &StreamConsumer,
    ) -> Result<(), KafkaError> {
        let Some(part) = run.parts.remove(&p) else {
            return Ok(());
        };
        let Part {
            epoch,
            state,
            position,
            cancel,
            reacquire,
            ..
        } = part;
        let State::Releasing {
            to_epoch,
            to,
            abandon,
            ..
        } = state
        else {
            return Ok(());
        };
        cancel.cancel();
        let position = position.filter(|_| !abandon && self.lease.holds_now());
        if let Some(pos) = position {
            let mut positions = std::collections::BTreeMap::new();
            positions.insert(p, pos);
            self.snapshot_and_commit(consumer, &positions, CommitMode::Sync)
                .await?;
        }
        {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            let partitions = self.partitions;
            store.retain(|c| partition_for(&c.id, partitions) != p);
            store.forget_fence(p);
        }
        self.held.remove(p);
        if position.is_some() {
            let ev = self.handoff(p, to_epoch, &self.node_id, &to, "released");
            self.publish_handoff(HandoffEvent {
                committed_offset: position,
                ..ev
            });
            tracing::info!(partition = p, epoch, to = %to, committed = ?position, "released");
        }
        if reacquire {
            self.reconcile(&self.ownership.view(), run, consumer)?;
        }
        self.update_caught_up(run);
        Ok(())
    }

    /// A handoff step of `p` at `epoch`.
    pub(super) fn handoff(&self, p: i32, epoch: u64, from: &str, to: &str, step: &str) -> HandoffEvent {
        HandoffEvent {
            v: SCHEMA_VERSION,
            partition: p,
            epoch,
            from: from.to_string(),
            to: to.to_string(),
            step: step.to_string(),
            committed_offset: None,
            replayed: None,
            timestamp: OffsetDateTime::now_utc(),
        }
    }

    /// Publishes a handoff step on chat.events (for peers, dashboards and measurements).
    pub(super) fn publish_handoff(&self, ev: HandoffEvent) {
        let key = format!("p{}", ev.partition);
        if let Ok(bytes) = encode(&MeshEvent::Handoff(ev)) {
            let ep = partition_for(&key, self.events_partitions);
            self.producer.send_nowait(&self.topics.events, ep, &key, &bytes);
        }
    }
}
