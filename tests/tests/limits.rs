//! Inputs that used to stop a worker from committing or answering: a long conversation of
//! large messages (its snapshot outgrew the broker's record limit), a reply larger than a record
//! may be. Real workers, a real broker; counted outcomes.

use std::time::Duration;

use meshchat_tests::*;

const T: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread")]
async fn large_conversations_and_replies_never_stop_answering_or_committing() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = TestMesh::start(
        "limits",
        MeshOptions {
            partitions: PARTITIONS,
            token_ms: 0,
            ..Default::default()
        },
    )
    .await?;
    let urls: Vec<String> = mesh.workers.iter().map(|w| w.url.clone()).collect();
    let url = |i: usize| urls[i % urls.len()].clone();
    let mut sent = Vec::new();

    // 48 messages of 30 KiB (under the 32 KiB content limit), each echoed by a reply as large:
    // ~3 MB of history in one conversation, three times the broker's record limit
    let long = "long-talk";
    for i in 0..48 {
        let content = format!("{i:02} {}", "x".repeat(30 * 1024 - 4));
        let id = send(&url(i), long, "ann", &content).await?;
        let reply = wait_reply(&url(i), long, &id, T).await?;
        assert!(reply["error"].is_null(), "{reply}");
        sent.push(id);
    }

    // a reply larger than a record may be: an error reply saying so, and the conversation goes on
    let huge = "huge-reply";
    let id = send(&url(0), huge, "bob", "[big:1200000] tell me everything").await?;
    let reply = wait_reply(&url(0), huge, &id, T).await?;
    assert_eq!(reply["error"]["kind"], "notStored", "{reply}");
    assert_eq!(reply["error"]["message"], "The answer was too large to store");
    sent.push(id);
    let id = send(&url(1), huge, "bob", "a short question now").await?;
    let reply = wait_reply(&url(1), huge, &id, T).await?;
    assert!(reply["error"].is_null(), "{reply}");
    sent.push(id);

    // 24 ordinary conversations across all workers are answered
    let mut ordinary = Vec::new();
    for i in 0..24 {
        let conv = format!("plain-{i}");
        ordinary.push((conv.clone(), send(&url(i), &conv, "cid", "hello").await?));
    }
    for (i, (conv, id)) in ordinary.iter().enumerate() {
        wait_reply(&url(i + 1), conv, id, T).await?;
        sent.push(id.clone());
    }

    // the owners' commits pass the large messages in every partition
    let messages = format!("{}chat.messages", mesh.prefix);
    let group = format!("{}meshchat-owners", mesh.prefix);
    let log = read_topic(&mesh.bootstrap, &messages).await?;
    for p in 0..PARTITIONS {
        let Some(last) = log.iter().filter(|r| r.partition == p).map(|r| r.offset).max() else {
            continue;
        };
        wait_for(
            &format!("partition {p}'s commit past offset {last}"),
            T,
            || async {
                let (offset, _) = committed(&mesh.bootstrap, &group, &messages, p).await.ok()??;
                (offset > last).then_some(())
            },
        )
        .await?;
    }

    // the long conversation's owner drains: its release writes a snapshot and commits (it used
    // to fail on the same error and wait for the drain's timeout)
    let p = meshchat_wire::partition_for(long, PARTITIONS);
    let mut owner = None;
    for i in 0..mesh.workers.len() {
        if mesh.owned(i).await.is_some_and(|o| o.contains(&i64::from(p))) {
            owner = Some(i);
        }
    }
    let owner = owner.ok_or_else(|| anyhow::anyhow!("nobody owns partition {p}"))?;
    let status = mesh.workers[owner].stop().await?;
    assert!(status.success(), "clean exit: {status}");
    let owner_log = std::fs::read_to_string(&mesh.workers[owner].log)?;
    assert!(
        owner_log.contains("owner loop drained: snapshots written, offsets committed"),
        "the drain's final commit was written"
    );
    assert!(
        !owner_log.contains("snapshot round failed"),
        "no snapshot round failed"
    );
    assert!(
        !owner_log.contains("release could not snapshot"),
        "every release was written"
    );
    let other = (owner + 1) % mesh.workers.len();
    let id = send(
        &mesh.workers[other].url,
        long,
        "ann",
        "still there after the move?",
    )
    .await?;
    let reply = wait_reply(&mesh.workers[other].url, long, &id, T).await?;
    assert!(reply["error"].is_null(), "{reply}");
    sent.push(id);

    // ground truth: every message answered once
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = Tally::of(&read_topic(&mesh.bootstrap, &messages).await?);
    let (replied, lost, duplicated) = tally.outcome(&sent);
    println!(
        "sent={} replied={replied} errors={} lost={lost} duplicated={duplicated}",
        sent.len(),
        tally.errors
    );
    assert_eq!(
        (tally.sent(), replied, lost, duplicated, tally.errors),
        (sent.len(), sent.len(), 0, 0, 1)
    );
    Ok(())
}
