//! A producer that librdkafka leaves unable to deliver to a partition while the cluster is fine
//! (a leader state no metadata refresh clears, confluentinc/librdkafka#5430) is replaced by a
//! fresh one after a record times out. On librdkafka's mock cluster, which can put a client into
//! such a state at a chosen moment: a produce or metadata answer naming no leader with a leader
//! epoch newer than any real one, after which every real answer is ignored as outdated.

use std::ffi::CString;
use std::time::Duration;

use meshchat_wire::kafka::Producer;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

const TOPIC: &str = "t";

/// A two-broker mock cluster and the client that hosts it.
fn mock() -> BaseProducer {
    ClientConfig::new()
        .set("test.mock.num.brokers", "2")
        .create()
        .expect("a mock cluster")
}

fn cluster(host: &BaseProducer) -> MockCluster<'_, rdkafka::producer::DefaultProducerContext> {
    host.client().mock_cluster().expect("the mock cluster")
}

/// Makes the next metadata answer about the partition say "no leader" with an epoch from the
/// future: the client that reads it (at its next refresh, every 100 ms here) keeps the partition
/// without a leader, every later answer being older.
async fn wedge(host: &BaseProducer) {
    let topic = CString::new(TOPIC).expect("topic name");
    // SAFETY: the mock cluster belongs to `host`, alive for this call; the topic is a valid
    // C string for its duration
    let err = unsafe {
        let mcluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr());
        rdkafka::bindings::rd_kafka_mock_partition_push_leader_response(mcluster, topic.as_ptr(), 0, -1, 1000)
    };
    assert_eq!(err, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn config(host: &BaseProducer) -> ClientConfig {
    let c = cluster(host);
    c.create_topic(TOPIC, 1, 1).expect("topic");
    c.partition_leader(TOPIC, 0, Some(1)).expect("leader");
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", c.bootstrap_servers())
        .set("message.timeout.ms", "3000")
        .set("topic.metadata.refresh.interval.ms", "100");
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wedged_client_stays_wedged_but_the_producer_replaces_it() {
    // the wedge is real and lasting for a plain client
    let host = mock();
    let plain: FutureProducer = config(&host)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let send = |p: &FutureProducer| {
        let p = p.clone();
        async move {
            p.send(
                FutureRecord::to(TOPIC).partition(0).key("k").payload("v"),
                Timeout::Never,
            )
            .await
            .map_err(|(e, _)| e)
        }
    };
    assert!(send(&plain).await.is_ok());
    wedge(&host).await;
    let mut failed = 0;
    for _ in 0..3 {
        failed += usize::from(send(&plain).await.is_err());
    }
    assert_eq!(failed, 3, "a plain client stays unable to deliver");

    // the same with MeshChat's producer: one record times out, the next ones are delivered
    let host = mock();
    let producer = Producer::new(&config(&host)).expect("producer");
    let first = producer.send(TOPIC, 0, "k", b"before").await.expect("delivered");
    wedge(&host).await;
    let stuck = producer.send(TOPIC, 0, "k", b"stuck").await;
    assert!(stuck.is_err(), "the wedged client times out: {stuck:?}");
    assert_eq!(producer.replacements(), 1);
    let mut offsets = Vec::new();
    for i in 0..3 {
        offsets.push(
            producer
                .send(TOPIC, 0, "k", format!("after {i}").as_bytes())
                .await
                .expect("a fresh client delivers"),
        );
    }
    assert!(offsets.iter().all(|o| *o > first), "{first} then {offsets:?}");
    assert_eq!(producer.replacements(), 1, "replaced once, not per record");
    // clones share the fresh client
    let clone = producer.clone();
    assert!(clone.send(TOPIC, 0, "k", b"clone").await.is_ok());
    producer.flush(Duration::from_secs(5)).expect("flushed");
}
