//! The broker for a test run, and direct reads of topics (ground truth for assertions).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers as _;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::OnceCell;

static BROKER: OnceCell<String> = OnceCell::const_new();

/// Bootstrap address of the run's broker: `MESHCHAT_TEST_BOOTSTRAP` if set, else a broker
/// started (or found running) by `scripts/kafka.sh ensure` on port 19092.
pub async fn broker() -> anyhow::Result<String> {
    BROKER
        .get_or_try_init(|| async {
            if let Ok(b) = std::env::var("MESHCHAT_TEST_BOOTSTRAP") {
                return Ok(b);
            }
            // `cargo test` runs us from the package root (tests/), `make bench` from the repo's
            let script = ["../scripts/kafka.sh", "scripts/kafka.sh"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .context("scripts/kafka.sh not found (run from the repository or tests/)")?;
            let out = tokio::task::spawn_blocking(move || {
                Command::new("bash")
                    .arg(script)
                    .args(["ensure", "19092"])
                    .output()
            })
            .await??;
            if !out.status.success() {
                bail!("could not start Kafka: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok("127.0.0.1:19092".to_string())
        })
        .await
        .cloned()
}

fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "meshchat-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()?)
}

fn partitions(c: &BaseConsumer, topic: &str) -> anyhow::Result<i32> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md.topics().first().context("no metadata")?;
    if t.error().is_some() {
        bail!("topic {topic} does not exist");
    }
    Ok(t.partitions().len() as i32)
}

/// High watermark of every partition of `topic` (empty if the topic does not exist).
pub async fn end_offsets(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i64>> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c = consumer(&b)?;
        let Ok(n) = partitions(&c, &t) else {
            return Ok(Vec::new());
        };
        (0..n)
            .map(|p| Ok(c.fetch_watermarks(&t, p, Duration::from_secs(10))?.1))
            .collect()
    })
    .await?
}

/// A record read back from a topic.
#[derive(Clone, Debug)]
pub struct TopicRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: String,
    /// Payload as JSON.
    pub value: Value,
    /// Record headers (name, value as text).
    pub headers: Vec<(String, String)>,
}

/// Every record of `topic`, per partition in offset order.
pub async fn read_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<TopicRecord>> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c = consumer(&b)?;
        let n = partitions(&c, &t)?;
        let mut out = Vec::new();
        let mut tpl = TopicPartitionList::new();
        let mut remaining = std::collections::HashMap::new();
        for p in 0..n {
            let (low, high) = c.fetch_watermarks(&t, p, Duration::from_secs(10))?;
            if low < high {
                tpl.add_partition_offset(&t, p, Offset::Offset(low))?;
                remaining.insert(p, high);
            }
        }
        if remaining.is_empty() {
            return Ok(out);
        }
        c.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !remaining.is_empty() {
            if std::time::Instant::now() > deadline {
                bail!("reading {t} timed out");
            }
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m?;
            let p = m.partition();
            out.push(TopicRecord {
                partition: p,
                offset: m.offset(),
                key: m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                value: m
                    .payload()
                    .and_then(|v| serde_json::from_slice(v).ok())
                    .unwrap_or(Value::Null),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_string(), value.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
            if remaining.get(&p).is_some_and(|high| m.offset() + 1 >= *high) {
                remaining.remove(&p);
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        Ok(out)
    })
    .await?
}

/// Writes one record to `topic` partition `partition` (a test playing a misbehaving worker);
/// returns its offset.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<i64> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .create()?;
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(d) => Ok(d.offset),
        Err((e, _)) => Err(e.into()),
    }
}

/// Offset and metadata committed by consumer group `group` for `topic` partition `partition`.
pub async fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Option<(i64, String)>> {
    let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", &g)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&t, partition);
        let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(got.find_partition(&t, partition).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some((o, e.metadata().to_string())),
            _ => None,
        }))
    })
    .await?
}

/// A broker of one test's own, which it may pause (SIGSTOP) without disturbing the others;
/// stopped and removed when dropped.
pub struct PrivateBroker {
    /// Its bootstrap address.
    pub bootstrap: String,
    port: u16,
    dir: std::path::PathBuf,
    pid: u32,
}

impl PrivateBroker {
    /// Starts one on free ports (`scripts/kafka.sh start`; ~10 s).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false, false).await
    }

    /// Starts one that logs every request it answers in [`Self::request_log`].
    pub async fn logging_requests() -> anyhow::Result<Self> {
        Self::start_with(true, false).await
    }

    /// Starts one that also has the listeners a Strimzi cluster offers its users: SASL_SSL
    /// with SCRAM-SHA-512 ([`Self::sasl_ssl`], user `meshchat`, [`Self::scram_password`]) and
    /// SSL requiring a client certificate ([`Self::mtls`]); PEM files in [`Self::tls_file`].
    pub async fn secure() -> anyhow::Result<Self> {
        Self::start_with(false, true).await
    }

    /// The SASL_SSL (SCRAM-SHA-512) listener of a [`Self::secure`] broker.
    pub fn sasl_ssl(&self) -> String {
        format!("127.0.0.1:{}", self.port + 2)
    }

    /// The SSL listener requiring a client certificate.
    pub fn mtls(&self) -> String {
        format!("127.0.0.1:{}", self.port + 3)
    }

    /// `ca.crt`, `client.crt`, `client.key` (PEM).
    pub fn tls_file(&self, name: &str) -> std::path::PathBuf {
        self.dir.join("tls").join(name)
    }

    /// The SCRAM password of user `meshchat`.
    pub fn scram_password(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.tls_file("password"))?
            .trim()
            .to_string())
    }

    /// Where a broker started with [`Self::logging_requests`] logs them: one JSON line each.
    pub fn request_log(&self) -> std::path::PathBuf {
        self.dir.join("logs").join("requests.log")
    }

    async fn start_with(log_requests: bool, secure: bool) -> anyhow::Result<Self> {
        let port = crate::free_ports(if secure { 4 } else { 2 })?;
        let dir = std::env::temp_dir().join(format!("meshchat-kafka-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = ["../scripts/kafka.sh", "scripts/kafka.sh"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .context("scripts/kafka.sh not found")?;
        let (d, p) = (dir.clone(), port.to_string());
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .args(["start", &p])
                .arg(&d)
                .env("KAFKA_REQUEST_LOG", if log_requests { "1" } else { "0" })
                .env("KAFKA_SECURE", if secure { "1" } else { "0" })
                .output()
        })
        .await??;
        if !out.status.success() {
            bail!(
                "could not start a private Kafka: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid = std::fs::read_to_string(dir.join("kafka.pid"))?.trim().parse()?;
        Ok(Self {
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            dir,
            pid,
        })
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill {sig} {} failed", self.pid);
        }
        Ok(())
    }

    /// Freezes the broker: connections stay open, nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets it run again.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    /// Loses everything the broker sends its clients (loopback packets from its port; root
    /// only) until the guard is dropped: requests still arrive and are carried out, their
    /// answers never come back.
    pub fn lose_answers(&self) -> anyhow::Result<LostAnswers> {
        let rule = vec![
            "OUTPUT".to_string(),
            "-o".into(),
            "lo".into(),
            "-p".into(),
            "tcp".into(),
            "--sport".into(),
            self.port.to_string(),
            "-j".into(),
            "DROP".into(),
        ];
        let ok = Command::new("iptables").arg("-I").args(&rule).status()?.success();
        if !ok {
            bail!("iptables -I {} failed (root and iptables needed)", rule.join(" "));
        }
        Ok(LostAnswers { rule })
    }
}

/// The broker's answers are lost while this lives (see [`PrivateBroker::lose_answers`]).
pub struct LostAnswers {
    rule: Vec<String>,
}

impl Drop for LostAnswers {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.rule).status();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.resume();
        let script = ["../scripts/kafka.sh", "scripts/kafka.sh"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        if let Some(script) = script {
            let _ = Command::new("bash")
                .arg(script)
                .args(["stop", &self.port.to_string()])
                .arg(&self.dir)
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
