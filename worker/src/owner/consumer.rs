//! The owner's consumer: assigned exactly the partitions being consumed, and woken when one is
//! added while a long poll is in flight.

use std::collections::{BTreeMap, BTreeSet};

use meshchat_wire::kafka::{KafkaError, TailFetch};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::{Owner, Run, takeover};
use crate::ownership::Partition;

// === impl Owner ===

impl Owner {
    /// Assigns the consumer exactly `positions`.
    ///
    /// librdkafka keeps one fetch per broker in flight, and an added partition joins only the
    /// next one: with the consumer's long poll a take-over's replay could wait up to that wait
    /// on a quiet mesh. So when partitions are added while others are being fetched, the
    /// highest fence this owner has read in one of those is restated — a record the in-flight
    /// fetch returns at once (when that partition has the same leader as the added one; with
    /// several brokers the added one may still wait for its leader's poll). Readers keep the
    /// highest fence per partition, so the restatement changes no reader's state.
    pub(super) fn assign(
        &self,
        positions: &BTreeMap<Partition, i64>,
        run: &mut Run,
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in positions {
            tpl.add_partition_offset(&self.log.topics().messages, *p, Offset::Offset(*o))?;
        }
        run.consumer.assign(&tpl)?;
        let now: BTreeSet<Partition> = positions.keys().copied().collect();
        let added = now.difference(&run.assigned).next().is_some();
        // with fetch batching a fetch waits for 1 MB, which one small record does not end
        if added && self.settings.fetch == TailFetch::LongPoll {
            self.wake(now.intersection(&run.assigned));
        }
        run.assigned = now;
        Ok(())
    }

    /// Restates, in the first of `fetched` where this owner has read a fence, the highest one
    /// (see [`Self::assign`]); queued, not awaited. Nothing is written while the heartbeat lease
    /// has lapsed, nor in a partition whose fence is not read yet (a replay still before it).
    fn wake<'a>(&self, fetched: impl Iterator<Item = &'a Partition>) {
        if !self.lease.holds_now() {
            return;
        }
        let known = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            fetched
                .map(|q| (*q, store.fence(*q)))
                .find(|(_, fence)| *fence > 0)
        };
        let Some((q, epoch)) = known else { return };
        match meshchat_wire::encode(&takeover::fence(q, epoch, &self.settings.node_id)) {
            Ok(bytes) => self.log.producer().send_nowait(
                &self.log.topics().messages,
                q,
                meshchat_wire::FENCE_KEY,
                &bytes,
            ),
            Err(e) => tracing::warn!(partition = q, error = %e, "could not encode a fence"),
        }
    }
}
