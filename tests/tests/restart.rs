//! A worker restart (graceful or SIGKILL) keeps the conversation history, answers what
//! arrived while it was down, and never answers a message twice.

use std::time::Duration;

use meshchat_tests::*;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn history_survives_restarts_and_nothing_is_answered_twice() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("restart");
    let llm = FakeLlm::start(&["--token-latency-ms", "1"]).await?;
    let spec = WorkerSpec::new("owner", &prefix, &bootstrap, &llm.url)?.env("MESHCHAT_PARTITIONS", "4");
    let peers = format!("owner={}|all", spec.internal_url());
    let mut owner = Worker::start(spec).await?;
    let front = Worker::start(
        WorkerSpec::new("front", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_OWNED_PARTITIONS", "none")
            .env("MESHCHAT_PEERS", peers),
    )
    .await?;
    let convs = ["alpha", "beta"];
    let mut sent = Vec::new();
    for i in 0..6 {
        let conv = convs[i % 2];
        let id = send(&owner.url, conv, "ann", &format!("question {i}")).await?;
        wait_reply(&owner.url, conv, &id, T).await?;
        sent.push(id);
    }
    let before: Vec<_> =
        futures::future::try_join_all(convs.iter().map(|c| conversation(&owner.url, c))).await?;

    // graceful restart while a slow answer is streaming: the drain finishes it (or, if the
    // signal beat the consume, the next start answers it) — exactly once either way
    let slow = send(&owner.url, "gamma", "cid", "[slow:100] take your time").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = owner.stop().await?;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    owner.restart().await?;
    for (c, (_, want)) in convs.iter().zip(&before) {
        let (code, got) = conversation(&owner.url, c).await?;
        assert_eq!(code, 200);
        assert_eq!(&got, want, "{c} after a graceful restart");
    }
    let reply = wait_reply(&owner.url, "gamma", &slow, T).await?;
    assert!(reply["error"].is_null(), "{reply}");
    sent.push(slow);

    // crash: SIGKILL, messages arrive while the owner is down, then it comes back
    let id = send(&owner.url, "alpha", "ann", "just before the crash").await?;
    wait_reply(&owner.url, "alpha", &id, T).await?;
    sent.push(id);
    owner.kill().await?;
    for i in 0..3 {
        sent.push(send(&front.url, "beta", "bob", &format!("while down {i}")).await?);
    }
    owner.restart().await?;
    for id in &sent[sent.len() - 3..] {
        wait_reply(&front.url, "beta", id, T).await?;
    }
    let (_, alpha) = conversation(&owner.url, "alpha").await?;
    let (_, beta) = conversation(&front.url, "beta").await?;
    assert_eq!(alpha["messages"].as_array().map(Vec::len), Some(8));
    assert_eq!(beta["messages"].as_array().map(Vec::len), Some(12));
    assert_eq!(
        beta["participants"],
        serde_json::json!(["ann", "bob", "meshchat-agent"])
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = Tally::of(&read_topic(&bootstrap, &format!("{prefix}chat.messages")).await?);
    let (replied, lost, duplicated) = tally.outcome(&sent);
    println!(
        "sent={} replied={replied} lost={lost} duplicated={duplicated}",
        sent.len()
    );
    assert_eq!((tally.sent(), replied, lost, duplicated), (11, 11, 0, 0));
    Ok(())
}
