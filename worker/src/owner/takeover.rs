//! Taking a partition over: read the old owner's commit and snapshots, then write our fence and
//! read the log's end, each off the loop; the machine orders the two steps.

use std::time::{Duration, Instant};

use meshchat_wire::kafka::{KafkaError, META_TIMEOUT, StoredSnapshot, commit_start, restore_snapshots};
use meshchat_wire::{ChatRecord, EpochFence, FENCE_KEY, SCHEMA_VERSION, encode};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use time::OffsetDateTime;

use super::{Owner, Run, TakeoverResult};
use crate::ownership::{Epoch, Event, Partition};
use crate::store::{Conversation, record_time};

/// The record that fences partition `p` at `epoch` for `owner`: replies of older epochs after
/// it are void.
pub(super) fn fence(p: Partition, epoch: Epoch, owner: &str) -> ChatRecord {
    ChatRecord::EpochFence(EpochFence {
        v: SCHEMA_VERSION,
        partition: p,
        epoch,
        owner: owner.to_string(),
        timestamp: OffsetDateTime::now_utc(),
    })
}

// === impl Owner ===

impl Owner {
    /// Reads what the old owner committed and snapshotted, off the loop. It is read BEFORE our
    /// fence: every reply behind that commit was then written before the fence, so none of them
    /// is void. An old owner still running (a zombie, or one declared dead by mistake) may
    /// commit later, after replies the fence voids; we never read that commit.
    pub(super) fn read_commit(&self, p: Partition, epoch: Epoch, after: Duration, run: &Run) {
        let (tx, readers, topics) = (
            run.results.clone(),
            run.readers.clone(),
            self.log.topics().clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let began = Instant::now();
            let read = tokio::task::spawn_blocking(move || {
                let r = readers.take()?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topics.messages, p);
                let read = (|| {
                    let committed = r.committed_offsets(tpl, META_TIMEOUT)?;
                    let (low, _) = r.fetch_watermarks(&topics.messages, p, META_TIMEOUT)?;
                    let (start, fence) = commit_start(&committed, &topics.messages, p, low);
                    let snapshots = restore_snapshots(&r, &topics.conversations, &[p])?;
                    Ok::<_, KafkaError>((start, fence, snapshots.into_values().collect::<Vec<_>>()))
                })();
                readers.give_after(r, &read);
                read
            })
            .await
            .map_err(|_| KafkaError::Timeout { what: "commit read" })
            .and_then(|r| r);
            let result = match read {
                Ok((start, fence, snapshots)) => {
                    tracing::debug!(
                        partition = p,
                        epoch,
                        start,
                        reads_ms = began.elapsed().as_millis() as u64,
                        "commit read"
                    );
                    TakeoverResult::CommitRead {
                        partition: p,
                        epoch,
                        start,
                        fence,
                        snapshots,
                    }
                }
                Err(error) => TakeoverResult::Failed {
                    partition: p,
                    epoch,
                    error,
                },
            };
            let _ = tx.send(result).await;
        });
    }

    /// Writes our fence, then reads the log's end (the replay runs through the fence), off the
    /// loop.
    pub(super) fn write_fence(&self, p: Partition, epoch: Epoch, run: &Run) {
        let (tx, readers, log) = (run.results.clone(), run.readers.clone(), self.log.clone());
        let me = self.settings.node_id.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let written = async {
                let bytes = encode(&fence(p, epoch, &me))?;
                log.producer()
                    .send(&log.topics().messages, p, FENCE_KEY, &bytes)
                    .await?;
                let topic = log.topics().messages.clone();
                tokio::task::spawn_blocking(move || {
                    let r = readers.take()?;
                    let end = r.fetch_watermarks(&topic, p, META_TIMEOUT).map(|(_, high)| high);
                    readers.give_after(r, &end);
                    Ok::<_, KafkaError>(end?)
                })
                .await
                .map_err(|_| KafkaError::Timeout { what: "fence" })?
            }
            .await;
            let result = match written {
                Ok(end) => {
                    tracing::debug!(
                        partition = p,
                        epoch,
                        end,
                        fence_ms = began.elapsed().as_millis() as u64,
                        "fence written"
                    );
                    TakeoverResult::FenceWritten {
                        partition: p,
                        epoch,
                        end,
                    }
                }
                Err(error) => TakeoverResult::Failed {
                    partition: p,
                    epoch,
                    error,
                },
            };
            let _ = tx.send(result).await;
        });
    }

    /// A take-over task's report, as the machine's event. The snapshots a commit read brought
    /// are kept for this step only: the machine's `WriteFence` accepts them (`Restore` installs
    /// them once the fence is written); a read it ignores (stale) is dropped.
    pub(super) fn takeover_event(&self, result: TakeoverResult, run: &mut Run) -> Event {
        match result {
            TakeoverResult::CommitRead {
                partition,
                epoch,
                start,
                fence,
                snapshots,
            } => {
                run.read = Some(((partition, epoch), snapshots));
                Event::CommitRead {
                    partition,
                    epoch,
                    start,
                    fence,
                }
            }
            TakeoverResult::FenceWritten {
                partition,
                epoch,
                end,
            } => Event::FenceWritten {
                partition,
                epoch,
                end,
            },
            TakeoverResult::Failed {
                partition,
                epoch,
                error,
            } => {
                tracing::warn!(partition, epoch, error = %error, "take-over failed; retrying");
                Event::AcquireFailed { partition, epoch }
            }
        }
    }

    /// Installs a take-over's snapshots and the fence before where its replay starts.
    /// Idle conversations (all they hold in their snapshot, nothing to answer) are only indexed:
    /// they come back from the snapshot when needed, so memory follows the active ones.
    pub(super) fn restore(&self, p: Partition, fence: Epoch, snapshots: Vec<StoredSnapshot>) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let idle_secs = self.settings.idle_evict.as_secs() as i64;
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        store.seed_fence(p, fence);
        let (mut held, mut indexed) = (0usize, 0usize);
        for (s, offset) in snapshots {
            let last_at = s
                .entries
                .iter()
                .map(|e| record_time(&e.record))
                .max()
                .unwrap_or(0);
            let clean = s.pending.is_empty() && s.unstored.is_empty() && s.refused.is_empty();
            if clean && now - last_at >= idle_secs {
                store.index_evicted(&s.key(), p, offset);
                indexed += 1;
                continue;
            }
            let mut conv = Conversation::from_snapshot(s, |t| self.tokenizer.count(t));
            conv.snapshot_offset = Some(offset);
            store.restore(conv);
            held += 1;
        }
        tracing::info!(partition = p, held, idle = indexed, fence, "replaying");
    }
}
