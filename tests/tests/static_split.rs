//! 200 messages over 50 conversations on 3 workers with a static split of the partitions:
//! every user message gets exactly one reply, per-conversation order is kept.

use std::time::Duration;

use futures::StreamExt;
use meshchat_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn static_split_answers_every_message_exactly_once_in_order() -> anyhow::Result<()> {
    let bootstrap = broker().await?;
    let prefix = unique_prefix("split");
    let llm = FakeLlm::start(&["--token-latency-ms", "2"]).await?;
    let workers = start_static(&prefix, &bootstrap, &llm.url, &["0-7", "8-15", "16-23"], &[]).await?;
    let urls: Vec<String> = workers.iter().map(|w| w.url.clone()).collect();

    // 200 sends, 50 conversations, spread over the workers, 16 at a time
    let sends = (0..200).map(|i| {
        let url = urls[i % 3].clone();
        async move {
            send(
                &url,
                &format!("conv-{}", i % 50),
                &format!("user-{}", i % 7),
                &format!("message {i}"),
            )
            .await
        }
    });
    let results: Vec<anyhow::Result<String>> =
        futures::stream::iter(sends).buffer_unordered(16).collect().await;
    let accepted: Vec<String> = results.into_iter().collect::<anyhow::Result<_>>()?;
    assert_eq!(accepted.len(), 200);

    // ground truth: the conversation log itself
    let topic = format!("{prefix}chat.messages");
    let log = wait_for("a reply to every message", Duration::from_secs(120), || async {
        let log = read_topic(&bootstrap, &topic).await.ok()?;
        let replies = log.iter().filter(|r| r.value["type"] == "agentReply").count();
        (replies >= 200).then_some(log)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let any duplicate surface
    let log = read_topic(&bootstrap, &topic).await.unwrap_or(log);

    let tally = Tally::of(&log);
    assert_eq!(tally.errors, 0, "no error replies expected");
    let (replied, lost, duplicated) = tally.outcome(&accepted);
    let (sent, logged) = (accepted.len(), tally.sent());
    println!("sent={sent} logged={logged} replied={replied} lost={lost} duplicated={duplicated}");
    assert_eq!((logged, replied, lost, duplicated), (200, 200, 0, 0));
    assert_eq!(tally.users.len(), 50);
    for (conv, order) in &tally.users {
        assert_eq!(
            tally.reply_order.get(conv),
            Some(order),
            "replies of {conv} follow its messages' order"
        );
    }

    // each worker serves every conversation the same way (own, or forwarded to the owner)
    for i in [0, 17, 49] {
        let id = format!("conv-{i}");
        let (_, a) = conversation(&urls[0], &id).await?;
        let (_, b) = conversation(&urls[1], &id).await?;
        let (_, c) = conversation(&urls[2], &id).await?;
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a["messages"].as_array().map(Vec::len), Some(8));
    }
    let mut owned_total = 0;
    for url in &urls {
        let status: serde_json::Value = http()
            .get(format!("{url}/api/agent/status"))
            .bearer_auth(meshchat_tests::auth::admin("harness"))
            .send()
            .await?
            .json()
            .await?;
        owned_total += status["ownedPartitions"].as_array().map(Vec::len).unwrap_or(0);
    }
    assert_eq!(owned_total, 24);
    Ok(())
}
