//! Snapshots, offset commits and lag.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshchat_wire::kafka::{KafkaError, commit_metadata};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::Owner;
use crate::metrics::PartitionLabel;
use crate::ownership::{Epoch, Partition};
use crate::store::Snapshot;

/// A deleted conversation's partition and key.
type Deleted = (Partition, String);

// === impl Owner ===

impl Owner {
    /// Writes snapshots of changed conversations of the partitions in `positions`, then
    /// commits those positions (everything before them is in the snapshots). With `wait`
    /// (releases and the final round) the commit waits for the broker, off the runtime's worker
    /// threads so HTTP keeps being served meanwhile.
    pub(super) async fn snapshot_and_commit(
        &self,
        consumer: &StreamConsumer,
        positions: &BTreeMap<Partition, (i64, Epoch)>,
        wait: bool,
    ) -> Result<(), KafkaError> {
        if positions.is_empty() {
            return Ok(());
        }
        if !self.lease.holds_now() {
            // maybe declared dead: a commit now could land after a new owner's fence
            tracing::warn!("heartbeat lease lapsed; skipping this snapshot round");
            return Ok(());
        }
        let partitions = self.log.partitions();
        let max_bytes = self.settings.snapshot_max_bytes;
        let (snapshots, fences, deleted): (Vec<Snapshot>, BTreeMap<Partition, Epoch>, Vec<Deleted>) = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            let fences = positions.keys().map(|p| (*p, store.fence(*p))).collect();
            // a partition no longer held: its new owner replays the deletion (not committed yet)
            let deleted = std::mem::take(&mut store.deleted)
                .into_iter()
                .filter(|(p, _)| positions.contains_key(p))
                .collect();
            let snapshots = store
                .iter_mut()
                .filter(|c| c.dirty)
                .filter_map(|c| {
                    let (_, epoch) = positions.get(&meshchat_wire::partition_for(&c.key, partitions))?;
                    c.dirty = false;
                    match c.to_snapshot_within(*epoch, max_bytes) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            // no retry makes it smaller: hold the commit where the last
                            // snapshot ends (the log replays the rest) until it changes
                            tracing::error!(error = %e, "conversation cannot be snapshotted");
                            c.holds_commit = Some(c.stored_through + 1);
                            None
                        }
                    }
                })
                .collect();
            (snapshots, fences, deleted)
        };
        self.tombstone(&deleted).await?;
        let topics = self.log.topics();
        let sends = snapshots.iter().map(|s| {
            let key = s.record.key();
            let p = meshchat_wire::partition_for(&key, partitions);
            async move {
                self.log
                    .producer()
                    .send(&topics.conversations, p, &key, &s.bytes)
                    .await
            }
        });
        let results = futures::future::join_all(sends).await;
        let holds = {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            let mut transient = None;
            for (s, result) in snapshots.iter().zip(results) {
                let Some(c) = store.get_mut(&s.record.key()) else {
                    continue;
                };
                match result {
                    Ok(offset) => {
                        c.snapshot_offset = Some(offset);
                        c.stored_through = s.record.last_offset;
                        c.holds_commit = s.record.unstored.first().copied();
                    }
                    Err(e) if e.is_permanent() => {
                        tracing::error!(conversation = %c.key, bytes = s.bytes.len(), error = %e, "the broker refuses this conversation's snapshot; holding its partition's commit where the last one ends");
                        c.holds_commit = Some(c.stored_through + 1);
                    }
                    Err(e) => {
                        c.dirty = true;
                        transient.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = transient {
                return Err(e);
            }
            let mut holds: BTreeMap<Partition, i64> = BTreeMap::new();
            for c in store.iter().filter(|c| c.holds_commit.is_some()) {
                let p = meshchat_wire::partition_for(&c.key, partitions);
                if let (Some(at), true) = (c.holds_commit, positions.contains_key(&p)) {
                    let hold = holds.entry(p).or_insert(at);
                    *hold = (*hold).min(at);
                }
            }
            holds
        };
        let mut tpl = TopicPartitionList::new();
        for (p, (o, _)) in positions {
            let at = holds.get(p).map_or(*o, |h| (*h).min(*o));
            let mut e = tpl.add_partition(&topics.messages, *p);
            e.set_offset(Offset::Offset(at))?;
            e.set_metadata(commit_metadata(fences.get(p).copied().unwrap_or(0)));
        }
        if wait {
            tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync))?;
        } else {
            consumer.commit(&tpl, CommitMode::Async)?;
        }
        self.evict_idle();
        Ok(())
    }

    /// Idle conversations leave memory (their snapshots are written), and the least recently
    /// active ones while more are held than allowed.
    fn evict_idle(&self) {
        let partitions = self.log.partitions();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let idle_secs = self.settings.idle_evict.as_secs() as i64;
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let evicted = store.evict_idle(now, idle_secs, self.settings.max_resident, |key| {
            meshchat_wire::partition_for(key, partitions)
        });
        let held = store.len();
        drop(store);
        if evicted > 0 {
            tracing::debug!(evicted, held, "idle conversations left memory");
        }
        if evicted >= 1000 {
            // glibc keeps the freed pages of many small conversations; give them back
            meshchat_heap::release_free_heap();
        }
    }

    /// Publishes consumer lag per held partition (the query runs off the runtime).
    ///
    /// One ListOffsets request per leader broker asks for every held partition's end offset
    /// ("offsets for time" latest); a watermark query per partition would send two requests
    /// each. librdkafka fails the whole call on any partition's error: that round reports
    /// nothing and the gauges keep their last values.
    pub(super) fn report_lag(&self, reader: &Arc<BaseConsumer>, positions: &BTreeMap<Partition, i64>) {
        // partitions that went elsewhere: their gauges would say their last lag for ever (and
        // keep an alert firing for a worker that no longer owns them)
        let gone: Vec<Partition> = self
            .load
            .lagged_partitions()
            .into_iter()
            .filter(|p| !positions.contains_key(p))
            .collect();
        for p in &gone {
            self.metrics
                .consumer_lag
                .remove(&PartitionLabel { partition: *p });
        }
        self.load.forget_lags(&gone);
        if positions.is_empty() {
            return;
        }
        let positions = positions.clone();
        let (reader, topic, metrics, load) = (
            reader.clone(),
            self.log.topics().messages.clone(),
            self.metrics.clone(),
            self.load.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut latest = TopicPartitionList::new();
            for p in positions.keys() {
                if latest.add_partition_offset(&topic, *p, Offset::End).is_err() {
                    return;
                }
            }
            let ends = match reader.offsets_for_times(latest, Duration::from_secs(1)) {
                Ok(ends) => ends,
                Err(e) => {
                    tracing::debug!(error = %e, "lag query failed");
                    return;
                }
            };
            let lags = lags(&ends, &topic, &positions);
            for (p, lag) in &lags {
                metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabel { partition: *p })
                    .set(*lag);
            }
            load.set_lags(&lags);
        });
    }
}

/// Records behind each position, from a list of end offsets (partitions whose end offset did not
/// come back are left out rather than reported as caught up).
fn lags(ends: &TopicPartitionList, topic: &str, positions: &BTreeMap<i32, i64>) -> Vec<(i32, i64)> {
    positions
        .iter()
        .filter_map(|(p, pos)| match ends.find_partition(topic, *p)?.offset() {
            Offset::Offset(end) => Some((*p, (end - pos).max(0))),
            _ => None,
        })
        .collect()
}

impl Owner {
    /// Deleted conversations' snapshots and index entries get tombstones (before the commit
    /// passes their deletion); on failure they are kept for the next round.
    async fn tombstone(&self, deleted: &[Deleted]) -> Result<(), KafkaError> {
        let topics = self.log.topics();
        let sends = deleted.iter().flat_map(|(p, key)| {
            [&topics.conversations, &topics.index]
                .map(|topic| async move { self.log.producer().send_tombstone(topic, *p, key).await })
        });
        let failed = futures::future::join_all(sends)
            .await
            .into_iter()
            .find_map(Result::err);
        match failed {
            None => Ok(()),
            Some(e) => {
                let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
                store.deleted.extend(deleted.iter().cloned());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_distance_to_the_end_and_unknown_ends_are_skipped() {
        let mut ends = TopicPartitionList::new();
        ends.add_partition_offset("m", 0, Offset::Offset(120))
            .expect("offset");
        ends.add_partition_offset("m", 1, Offset::Offset(7))
            .expect("offset");
        ends.add_partition_offset("m", 2, Offset::End).expect("offset");
        let positions = BTreeMap::from([(0, 100), (1, 9), (2, 5), (3, 1)]);
        // 0: 20 behind; 1: a position past the end (read moments later) is not negative lag;
        // 2: the end did not resolve; 3: not in the answer
        assert_eq!(lags(&ends, "m", &positions), vec![(0, 20), (1, 0)]);
    }
}
