use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Answers the hub's asks as a fan-out would: positions, then ready.
async fn fan_out_once(hub: &Hub, at: i64) -> Partition {
    let p = hub.asked().await.expect("an ask");
    hub.read_to(p, Topic::Messages, at);
    hub.read_to(p, Topic::Stream, at + 1);
    hub.read_to(p, Topic::Users, at + 2);
    hub.fences_from(p, at - 5, 3);
    hub.ready(p);
    p
}

#[tokio::test]
async fn the_first_subscriber_of_a_partition_asks_for_it_once_and_waits_until_it_is_read() {
    let hub = Arc::new(Hub::default());
    let (a, b) = (hub.clone(), hub.clone());
    let first = tokio::spawn(async move { a.subscribe("t/c1", 4).await });
    let second = tokio::spawn(async move { b.subscribe("t/c2", 4).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "nobody goes on before the fan-out reads"
    );
    assert_eq!(fan_out_once(&hub, 100).await, 4);
    for s in [first, second] {
        let (_, at) = s.await.expect("joined").expect("served");
        assert_eq!((at.messages, at.stream, at.users), (100, 101, 102));
    }
    assert_eq!(hub.read_partitions(), 1);
    // one ask for the two: the queue is empty now
    assert!(
        tokio::time::timeout(Duration::from_millis(50), hub.asked())
            .await
            .is_err(),
        "a second ask"
    );
    // a partition read already: no waiting, no ask
    let (_, at) = hub.subscribe("t/c3", 4).await.expect("served");
    assert_eq!(at.messages, 100);
    assert_eq!(hub.fence_before(4, 96), Some(3));
    assert_eq!(
        hub.fence_before(4, 90),
        None,
        "before the fan-out started reading"
    );
}

#[tokio::test]
async fn a_partition_nobody_watches_is_let_go_after_the_linger_and_asked_for_again_later() {
    let hub = Arc::new(Hub::default());
    let h = hub.clone();
    let sub = tokio::spawn(async move { h.subscribe("t/c1", 2).await });
    fan_out_once(&hub, 10).await;
    let (rx, _) = sub.await.expect("joined").expect("served");
    let t = Instant::now();
    let linger = Duration::from_secs(30);
    assert!(hub.prune(t, linger).is_empty(), "watched");
    drop(rx);
    assert!(
        hub.prune(t + Duration::from_secs(1), linger).is_empty(),
        "idle from now"
    );
    assert!(
        hub.prune(t + Duration::from_secs(30), linger).is_empty(),
        "lingering"
    );
    assert_eq!(hub.prune(t + Duration::from_secs(31), linger), vec![2]);
    assert_eq!(hub.read_partitions(), 0);
    assert_eq!(hub.fence_before(2, 20), None, "its fences are forgotten with it");
    // the next subscriber asks again and gets the fan-out's new position
    let h = hub.clone();
    let sub = tokio::spawn(async move { h.subscribe("t/c9", 2).await });
    fan_out_once(&hub, 50).await;
    let (_, at) = sub.await.expect("joined").expect("served");
    assert_eq!(at.messages, 50);
}

#[tokio::test]
async fn a_subscriber_back_within_the_linger_keeps_its_partition() {
    let hub = Arc::new(Hub::default());
    let h = hub.clone();
    let sub = tokio::spawn(async move { h.subscribe("t/c1", 2).await });
    fan_out_once(&hub, 10).await;
    drop(sub.await.expect("joined").expect("served"));
    let t = Instant::now();
    let linger = Duration::from_secs(30);
    assert!(hub.prune(t, linger).is_empty());
    let (_rx, _) = hub.subscribe("t/c1", 2).await.expect("served at once");
    assert!(
        hub.prune(t + Duration::from_secs(60), linger).is_empty(),
        "watched again"
    );
}

#[tokio::test]
async fn a_restart_ends_the_streams_of_partitions_read_and_keeps_the_asks_waiting() {
    let hub = Arc::new(Hub::default());
    let h = hub.clone();
    let sub = tokio::spawn(async move { h.subscribe("t/c1", 1).await });
    fan_out_once(&hub, 10).await;
    let (mut served, _) = sub.await.expect("joined").expect("served");
    // an ask the fan-out took but never answered (it failed)
    let h = hub.clone();
    let waiting = tokio::spawn(async move { h.subscribe("t/c2", 3).await });
    assert_eq!(hub.asked().await, Some(3));
    hub.restart();
    assert!(matches!(
        served.recv().await,
        Err(broadcast::error::RecvError::Closed)
    ));
    assert_eq!(hub.waiting(), vec![3], "the new fan-out reads it first");
    assert_eq!(hub.read_partitions(), 0);
    hub.read_to(3, Topic::Messages, 7);
    hub.ready(3);
    let (_, at) = waiting.await.expect("joined").expect("served");
    assert_eq!(at.messages, 7);
}
