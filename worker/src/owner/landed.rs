//! Whether a reply whose write went unanswered is in the log after all.
//!
//! A write that timed out may still have reached the broker: a broker that stalls holds the
//! request in its socket and appends it when it wakes. Writing the reply again with a fresh
//! producer (another producer id, so the broker cannot tell the copies apart) would then store
//! it twice. So before writing again the answerer reads the partition for the reply's id.
//! Once the broker answers again, a request it held is read off its sockets within moments,
//! but not necessarily before the read's own, and a read sees only what every in-sync replica
//! has (followers fetch every ~0.5 s); so the read is repeated until the broker has been
//! answering for `SETTLE` before "not there" is believed. Best effort, not a proof: a request
//! held longer than that still lands twice (readers keep the first reply; the second is counted
//! nowhere). Reads are few at a time (`READS`): an outage leaves many answers unacknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::log::Log;
use crate::ownership::Partition;

/// How long the broker must have been answering before an absent reply counts as not written.
const SETTLE: Duration = Duration::from_secs(3);

/// Log reads at a time, across the worker: each is a client and a blocking thread.
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Where to look and what for.
pub struct Unanswered<'a> {
    /// The conversation's partition.
    pub partition: Partition,
    /// The first offset the reply can be at (after the message it answers).
    pub from: i64,
    /// The conversation's key.
    pub key: &'a str,
    /// The reply's id.
    pub reply_id: &'a str,
}

/// What the log says about an unanswered write.
#[derive(Debug, PartialEq, Eq)]
pub enum Landed {
    /// The reply is stored at this offset.
    At(i64),
    /// It is not there: write it again.
    No,
    /// Called off before the log could be read.
    CalledOff,
}

/// Reads the log until it can tell whether the reply is there (see the module comment); `abandon`
/// or `cancel` call it off.
pub async fn landed(
    log: &Arc<Log>,
    write: &Unanswered<'_>,
    abandon: &CancellationToken,
    cancel: &CancellationToken,
) -> Landed {
    let mut answering_since: Option<Instant> = None;
    // while the broker is away, waits grow; once it answers, re-reads come every 200 ms
    let mut unreachable = crate::retry::forever(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        let permit = tokio::select! {
            p = READS.acquire() => p,
            () = abandon.cancelled() => return Landed::CalledOff,
            () = cancel.cancelled() => return Landed::CalledOff,
        };
        let read = {
            let log = Arc::clone(log);
            let (p, from) = (write.partition, write.from);
            let (key, id) = (write.key.to_string(), write.reply_id.to_string());
            // the permit goes with the read: one called off still holds it until it ends
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                log.find_reply(p, from, &key, &id)
            })
        };
        let outcome = tokio::select! {
            r = read => r,
            () = abandon.cancelled() => return Landed::CalledOff,
            () = cancel.cancelled() => return Landed::CalledOff,
        };
        let retry = match outcome {
            Ok(Ok(Some(offset))) => return Landed::At(offset),
            Ok(Ok(None)) => {
                let since = *answering_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE {
                    return Landed::No;
                }
                unreachable = crate::retry::forever(Duration::from_millis(200), Duration::from_secs(2));
                Duration::from_millis(200)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not read the log for an unanswered reply yet");
                answering_since = None;
                unreachable.next().unwrap_or(Duration::from_secs(2))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the log read for an unanswered reply failed");
                return Landed::No;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = abandon.cancelled() => return Landed::CalledOff,
            () = cancel.cancelled() => return Landed::CalledOff,
        }
    }
}
