//! The physical limit here: produce → consume round trips through the same broker with
//! rdkafka, same partitions and record size as the chat path, batching tuned. Two phases:
//! as fast as the producer can (throughput), then open loop at half that rate (latency, each
//! record timed from when it was *scheduled*, so a stall counts against every record behind it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::{Percentiles, percentiles};

/// What the raw path measured.
#[derive(Clone, Debug, Serialize)]
pub struct RawReport {
    /// Partitions of the topic.
    pub partitions: i32,
    /// Record size in bytes.
    pub record_bytes: usize,
    /// Records per second, producer flat out, counted at the consumer.
    pub max_msgs_per_s: f64,
    /// Round-trip latency while flat out (queueing included).
    pub max_latency_ms: Percentiles,
    /// Open-loop rate of the latency phase (half the maximum).
    pub half_rate: f64,
    /// Round-trip latency at half the maximum.
    pub half_latency_ms: Percentiles,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in admin.create_topics([&t], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// High watermark of a partition of a just-created topic: on a fresh broker the first
/// answers are "unknown partition" or "not leader" for a few seconds.
fn high_watermark(c: &BaseConsumer, topic: &str, p: i32) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.fetch_watermarks(topic, p, Duration::from_secs(5)) {
            Ok((_, high)) => return Ok(high),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, topic, p, "partition not ready yet");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => bail!("{topic}/{p} not ready after 60 s: {e}"),
        }
    }
}

/// Consumes `topic` from its end in a thread until `stop`, timing every record.
fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<Vec<(u64, f64)>>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "meshchat-bench-raw")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(high_watermark(&c, topic, p)?))?;
    }
    c.assign(&tpl)?;
    Ok(std::thread::spawn(move || {
        // (receive time ns, latency ms)
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50))
                && let Some(p) = m.payload()
                && p.len() >= 8
            {
                let mut b = [0u8; 8];
                b.copy_from_slice(&p[..8]);
                let sent = u64::from_le_bytes(b);
                let now = now_ns();
                seen.push((now, now.saturating_sub(sent) as f64 / 1e6));
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        seen
    }))
}

fn producer(bootstrap: &str) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // what the workers use for replies (idempotent, acks=all), batched
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Sends for `secs` at `rate` records/s (open loop; `None`: flat out). Returns records sent.
fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partitions: i32,
    size: usize,
    secs: f64,
    rate: Option<f64>,
) -> u64 {
    let began = Instant::now();
    let start_ns = now_ns();
    let mut n: u64 = 0;
    let keys: Vec<String> = (0..partitions * 8).map(|i| format!("conv-{i}")).collect();
    let mut payload = vec![b'x'; size.max(8)];
    loop {
        let elapsed = began.elapsed().as_secs_f64();
        if elapsed >= secs {
            break;
        }
        let scheduled_ns = match rate {
            Some(r) => {
                let due = n as f64 / r;
                if due > elapsed {
                    std::thread::sleep(Duration::from_secs_f64((due - elapsed).min(0.001)));
                    continue;
                }
                start_ns + (due * 1e9) as u64
            }
            None => now_ns(),
        };
        let key = &keys[(n as usize) % keys.len()];
        // the first 8 bytes carry the scheduled send time (the producer copies the payload)
        payload[..8].copy_from_slice(&scheduled_ns.to_le_bytes());
        let rec = BaseRecord::to(topic)
            .partition((n % partitions as u64) as i32)
            .key(key.as_str())
            .payload(&payload);
        match p.send(rec) {
            Ok(()) => n += 1,
            // queue full: let the background thread drain it
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    let _ = p.flush(Duration::from_secs(30));
    n
}

/// Runs both phases, each `secs` long.
pub async fn measure(bootstrap: &str, partitions: i32, size: usize, secs: f64) -> anyhow::Result<RawReport> {
    let topic = format!("bench-raw-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_topic(bootstrap, &topic, partitions).await?;
    let (b, t) = (bootstrap.to_string(), topic.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<RawReport> {
        let p = producer(&b)?;
        let phase = |rate: Option<f64>| -> anyhow::Result<(u64, Vec<(u64, f64)>)> {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let reader = consume(&b, &t, partitions, stop.clone(), count.clone())?;
            std::thread::sleep(Duration::from_millis(300));
            let sent = send(&p, &t, partitions, size, secs, rate);
            // let the tail arrive
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
            let seen = reader
                .join()
                .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?;
            Ok((sent, seen))
        };
        let (_, seen) = phase(None)?;
        if seen.is_empty() {
            bail!("no record came back from {t}");
        }
        let first = seen.iter().map(|s| s.0).min().unwrap_or(0);
        let last = seen.iter().map(|s| s.0).max().unwrap_or(0);
        let window = (last.saturating_sub(first) as f64 / 1e9).max(1e-3);
        let max = seen.len() as f64 / window.max(secs * 0.5);
        let mut lat: Vec<f64> = seen.iter().map(|s| s.1).collect();
        let max_latency_ms = percentiles(&mut lat);
        let half = (max / 2.0).max(1.0);
        let (_, seen_half) = phase(Some(half))?;
        let mut lat: Vec<f64> = seen_half.iter().map(|s| s.1).collect();
        Ok(RawReport {
            partitions,
            record_bytes: size,
            max_msgs_per_s: max,
            max_latency_ms,
            half_rate: half,
            half_latency_ms: percentiles(&mut lat),
        })
    })
    .await
    .context("raw bench thread")?
}
