//! Ownership scenarios on a real broker with worker processes and the balancer process. Each
//! runs under steady load from many conversations and checks, per accepted user message,
//! exactly one reply visible through GET and through WebSockets opened before the scenario,
//! in per-conversation order; it prints sent / replied / lost / duplicated.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshchat_tests::*;
use serde_json::json;

// an upper bound for slow machines, not a measurement: scenarios settle in seconds here
const SETTLE: Duration = Duration::from_secs(180);

fn urls(mesh: &TestMesh, idx: &[usize]) -> Arc<Mutex<Vec<String>>> {
    Arc::new(Mutex::new(
        idx.iter().map(|i| mesh.workers[*i].url.clone()).collect(),
    ))
}

fn drop_url(urls: &Arc<Mutex<Vec<String>>>, url: &str) {
    if let Ok(mut u) = urls.lock() {
        u.retain(|x| x != url);
    }
}

fn watched(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-conv-{i}")).collect()
}

type Targets = Arc<Mutex<Vec<String>>>;

/// WebSockets on worker `watch_on` for the first `watch` conversations (opened before the
/// scenario), then a steady load of `rate` messages/s over `conversations` conversations spread
/// over all three workers (`hot` of every ten to two hot conversations).
async fn under_load(
    mesh: &TestMesh,
    watch_on: usize,
    tag: &str,
    watch: usize,
    conversations: usize,
    rate: u32,
    hot: usize,
) -> anyhow::Result<(std::collections::HashMap<String, LiveClient>, Targets, Load)> {
    let live = watch_all(&mesh.workers[watch_on].url, &watched(tag, watch)).await?;
    let targets = urls(mesh, &[0, 1, 2]);
    let load = Load::start(targets.clone(), conversations, rate, hot, tag);
    Ok((live, targets, load))
}

fn assert_exact(outcome: (usize, usize, usize, usize)) {
    let (sent, replied, lost, duplicated) = outcome;
    assert!(sent > 20, "the load ran: {sent}");
    assert_eq!((replied, lost, duplicated), (sent, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_migration_through_the_api() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mesh = TestMesh::start("migrate", MeshOptions::default()).await?;
    let (live, _targets, load) = under_load(&mesh, 2, "mig", 8, 24, 25, 0).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = mesh.owned(0).await.unwrap_or_default();
    let pauses = |w: usize| {
        gauge::<u64>(
            &mesh.workers[w].internal_url,
            "meshchat_handoff_pause_seconds_count",
        )
    };
    let released = || {
        gauge::<u64>(
            &mesh.workers[0].internal_url,
            "meshchat_partitions_released_total",
        )
    };
    let (taken_before, released_before) = (
        pauses(1).await.unwrap_or_default(),
        released().await.unwrap_or_default(),
    );
    let resp = http()
        .post(format!("{}/api/agent/migrate", mesh.workers[0].url))
        .bearer_auth(meshchat_tests::auth::operator())
        .json(&json!({"targetNode": "node-1"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["message"], "Migration started");
    assert_eq!(body["sourceNode"], "node-0");
    assert_eq!(body["partitions"].as_array().map(Vec::len), Some(before.len()));
    assert!(body["estimatedTime"].as_str().is_some_and(|t| t.ends_with("ms")));
    let owned = mesh.wait_owned_by(&[1, 2], SETTLE).await?;
    assert!(
        before.iter().all(|p| owned[&1].contains(p)),
        "node-1 took node-0's partitions"
    );
    // the handoffs in the metrics: released on one side, their pauses timed on the other
    let released = released().await.unwrap_or_default() - released_before;
    assert_eq!(released, before.len() as u64);
    let taken = pauses(1).await.unwrap_or_default() - taken_before;
    assert!(taken >= before.len() as u64, "{taken} pauses timed on node-1");
    // moving a partition to where it already is (just moved: in cooldown, so the balancer
    // leaves it there) is a conflict; an unknown target a bad request
    let again = http()
        .post(format!("{}/api/agent/migrate", mesh.workers[0].url))
        .bearer_auth(meshchat_tests::auth::operator())
        .json(&json!({"targetNode": "node-1", "partitions": [before[0]]}))
        .send()
        .await?;
    assert_eq!(again.status(), 409, "{}", again.text().await?);
    let unknown = http()
        .post(format!("{}/api/agent/migrate", mesh.workers[1].url))
        .bearer_auth(meshchat_tests::auth::operator())
        .json(&json!({"targetNode": "node-9"}))
        .send()
        .await?;
    assert_eq!(unknown.status(), 400);
    // requested moves go through the balancer's cooldown (10 s here): of two requests for the
    // same partition in a row, the second is inside the cooldown of the first move (or of the
    // migration above). The worker cannot know, so it answers 200; /api/mesh says why not.
    let mut back = serde_json::Value::Null;
    for target in ["node-2", "node-0"] {
        back = http()
            .post(format!("{}/api/agent/migrate", mesh.workers[0].url))
            .bearer_auth(meshchat_tests::auth::operator())
            .json(&json!({"targetNode": target, "partitions": [before[0]]}))
            .send()
            .await?
            .json()
            .await?;
    }
    let request = back["requestId"].as_str().unwrap_or_default().to_string();
    let reason = wait_for("the balancer's refusal in /api/mesh", SETTLE, || async {
        let m: serde_json::Value = http()
            .get(format!("{}/api/mesh", mesh.workers[2].url))
            .bearer_auth(meshchat_tests::auth::operator())
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        m["refusedMigrations"]
            .as_array()?
            .iter()
            .find(|r| r["requestId"] == request.as_str())
            .map(|r| r["reason"].to_string())
    })
    .await?;
    assert!(reason.contains("cooldown"), "{reason}");
    assert!(
        mesh.owned(1).await.unwrap_or_default().contains(&before[0]),
        "it stayed on node-1"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[2].url, &accepted, &live, SETTLE).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_an_owner_fails_over() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = TestMesh::start("sigkill", MeshOptions::default()).await?;
    let (live, targets, load) = under_load(&mesh, 0, "kill", 8, 24, 25, 0).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop_url(&targets, &mesh.workers[2].url);
    mesh.workers[2].kill().await?;
    let t = std::time::Instant::now();
    mesh.wait_owned_by(&[0, 1], SETTLE).await?;
    println!(
        "failover: serving again {:.1}s after SIGKILL",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[1].url, &accepted, &live, SETTLE).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_owner_wakes_as_a_zombie_and_is_fenced() -> anyhow::Result<()> {
    let _serial = serial().await;
    let opts = MeshOptions {
        token_ms: 40,
        ..MeshOptions::default()
    };
    let mesh = TestMesh::start("zombie", opts).await?;
    let (live, targets, load) = under_load(&mesh, 0, "zom", 8, 24, 25, 0).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop_url(&targets, &mesh.workers[2].url);
    mesh.workers[2].signal("STOP")?;
    mesh.wait_owned_by(&[0, 1], SETTLE).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    mesh.workers[2].signal("CONT")?;
    // the zombie learns the new table, releases nothing it still serves, rejoins
    tokio::time::sleep(Duration::from_secs(4)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[1].url, &accepted, &live, SETTLE).await?);
    let log = read_topic(&mesh.bootstrap, &format!("{}chat.messages", mesh.prefix)).await?;
    // epochs start at 1: an owner restates only a fence it has read, never an unknown one
    assert!(
        log.iter()
            .filter(|r| r.value["type"] == "epochFence")
            .all(|r| r.value["epoch"].as_u64().is_some_and(|e| e >= 1)),
        "a fence of epoch 0 in the log"
    );
    // distinct (partition, epoch): an owner also restates a fence to wake its own fetch
    let fences = log
        .iter()
        .filter(|r| r.value["type"] == "epochFence")
        .map(|r| (r.partition, r.value["epoch"].as_u64()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // replies written after a newer fence of their partition: the zombie's, void for readers
    let mut fence_of = std::collections::HashMap::new();
    let mut zombie = 0;
    for r in &log {
        match r.value["type"].as_str() {
            Some("epochFence") => {
                // readers keep the highest fence (an owner may restate an older one)
                let e = fence_of.entry(r.partition).or_insert(0);
                *e = (*e).max(r.value["epoch"].as_u64().unwrap_or(0));
            }
            Some("agentReply") if r.value["epoch"].as_u64() < fence_of.get(&r.partition).copied() => {
                zombie += 1
            }
            _ => {}
        }
    }
    println!("fences written: {fences}; zombie replies in the log, hidden from clients: {zombie}");
    assert!(fences >= 12, "every take-over fenced its partition");
    // on waking, the zombie found its heartbeat lease lapsed and dropped every partition
    // before writing a snapshot or commit
    let zlog = std::fs::read_to_string(&mesh.workers[2].log)?;
    assert!(
        zlog.contains("heartbeat lease lapsed"),
        "{}",
        mesh.workers[2].log_tail()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_worker() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = TestMesh::start("drain", MeshOptions::default()).await?;
    let (live, targets, load) = under_load(&mesh, 0, "drn", 8, 24, 25, 0).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop_url(&targets, &mesh.workers[1].url);
    let t = std::time::Instant::now();
    let status = mesh.workers[1].stop().await?;
    assert!(status.success(), "drained worker exits cleanly: {status}");
    println!("drain took {:.1}s", t.elapsed().as_secs_f64());
    mesh.wait_owned_by(&[0, 2], SETTLE).await?;
    // a client cannot drain a worker: the public port has no /drain, and it still serves
    let w2 = &mesh.workers[2];
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = http().request(method, format!("{}/drain", w2.url)).send().await?;
        assert_eq!(resp.status(), 404, "no drain on the public port");
    }
    let resp = http().get(format!("{}/readyz", w2.internal_url)).send().await?;
    assert_eq!(resp.status(), 200, "still ready after a public /drain");
    // the Kubernetes way: the kubelet's preStop hook runs `meshchat-worker drain` in the pod,
    // which returns once every partition is handed over; the SIGTERM that follows finds nothing
    // left to move
    drop_url(&targets, &w2.url);
    let drained = w2.drain_command(&[]).await?;
    assert_eq!(drained, json!({"drained": "handedOver", "partitionsHeld": 0}));
    let ready = http().get(format!("{}/readyz", w2.internal_url)).send().await?;
    assert_eq!(ready.status(), 503, "a draining worker is not ready");
    mesh.wait_owned_by(&[0], SETTLE).await?;
    let status = mesh.workers[2].stop().await?;
    assert!(
        status.success(),
        "exits cleanly after the preStop drain: {status}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[0].url, &accepted, &live, SETTLE).await?);

    // a drain SIGTERM did not follow (the last worker: no one takes its partitions) is undone,
    // and the worker serves again — before, a drained worker stayed out of service for good
    let w0 = &mesh.workers[0];
    let drained = w0.drain_command(&[]).await?;
    assert_eq!(drained["drained"], "noTakers", "{drained}");
    let ready = http().get(format!("{}/readyz", w0.internal_url)).send().await?;
    assert_eq!(ready.status(), 503);
    assert!(
        send(&w0.url, "after-drain", "u", "refused").await.is_err(),
        "a draining worker refuses sends"
    );
    let undone = w0.drain_command(&["--undo"]).await?;
    assert_eq!(undone, json!({"draining": false, "wasDraining": true}));
    let ready = http().get(format!("{}/readyz", w0.internal_url)).send().await?;
    assert_eq!(ready.status(), 200, "ready again");
    let id = send(&w0.url, "after-undo", "u", "back in service?").await?;
    wait_reply(&w0.url, "after-undo", &id, SETTLE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fourth_worker_joins_and_receives_partitions() -> anyhow::Result<()> {
    let _serial = serial().await;
    // slow answers and few slots keep the workers busy enough to balance (load >= 0.25); a
    // long cooldown keeps noisy load readings from moving the same partitions back and forth
    let opts = MeshOptions {
        token_ms: 40,
        concurrency: 4,
        cooldown_secs: 30,
        ..MeshOptions::default()
    };
    let mut mesh = TestMesh::start("scaleout", opts).await?;
    let (live, _targets, load) = under_load(&mesh, 0, "out", 8, 36, 30, 0).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    mesh.add_worker(3).await?;
    // node-3 holds partitions (the balancer may still be moving others at that moment)
    let got = wait_for("node-3 to receive partitions", SETTLE, || async {
        let status = match mesh.status(3).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("status of node-3: {e:#}");
                return None;
            }
        };
        let owned = status["ownedPartitions"].as_array()?.clone();
        (!owned.is_empty()).then_some(owned)
    })
    .await?;
    println!("node-3 received partitions {got:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[0].url, &accepted, &live, SETTLE).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_keeps_serving_without_a_balancer() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut mesh = TestMesh::start("nobalancer", MeshOptions::default()).await?;
    let (live, targets, load) = under_load(&mesh, 0, "nob", 8, 24, 25, 0).await?;
    mesh.balancer.kill().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // a worker restarts while no balancer runs: it reads the last table and serves it again
    drop_url(&targets, &mesh.workers[2].url);
    mesh.workers[2].kill().await?;
    mesh.workers[2].restart().await?;
    if let Ok(mut u) = targets.lock() {
        u.push(mesh.workers[2].url.clone());
    }
    mesh.wait_owned_by(&[0, 1, 2], SETTLE).await?;
    mesh.balancer.restart().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[1].url, &accepted, &live, SETTLE).await?);
    let mesh_view: serde_json::Value = http()
        .get(format!("{}/api/mesh", mesh.workers[0].url))
        .bearer_auth(meshchat_tests::auth::operator())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(mesh_view["partitions"].as_array().map(Vec::len), Some(12));
    assert_eq!(mesh_view["workers"].as_array().map(Vec::len), Some(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn skewed_load_is_balanced_within_the_limits() -> anyhow::Result<()> {
    let _serial = serial().await;
    let opts = MeshOptions {
        token_ms: 40,
        concurrency: 4,
        interval_secs: 2,
        cooldown_secs: 6,
        ..MeshOptions::default()
    };
    let mesh = TestMesh::start("skew", opts).await?;
    // two of every ten messages go to two hot conversations (each ~3.5x a normal one)
    let (live, _targets, load) = under_load(&mesh, 0, "skw", 4, 30, 15, 2).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let accepted = load.stop().await;
    assert_exact(verify_exactly_once(&mesh.workers[1].url, &accepted, &live, SETTLE).await?);
    // every published table: moves per generation within the cap, no partition moved again
    // within its cooldown
    let tables = read_topic(&mesh.bootstrap, &format!("{}chat.assignments", mesh.prefix)).await?;
    let mut last_owner: std::collections::HashMap<i64, (String, i64)> = std::collections::HashMap::new();
    let mut balance_moves = 0;
    for (i, t) in tables.iter().enumerate() {
        let mut moved = 0;
        for a in t.value["partitions"].as_array().cloned().unwrap_or_default() {
            let p = a["partition"].as_i64().unwrap_or(-1);
            let owner = a["owner"].as_str().unwrap_or_default().to_string();
            if let Some((prev, at)) = last_owner.get(&p)
                && *prev != owner
            {
                moved += 1;
                assert!(i as i64 - at > 0, "partition {p} moved twice in one generation");
            }
            last_owner.insert(p, (owner, i as i64));
        }
        assert!(
            moved <= 16,
            "generation {} moved {moved} partitions",
            t.value["generation"]
        );
        if i > 0 {
            balance_moves += moved;
        }
    }
    let view: serde_json::Value = http()
        .get(format!("{}/api/mesh", mesh.workers[0].url))
        .bearer_auth(meshchat_tests::auth::operator())
        .send()
        .await?
        .json()
        .await?;
    let loads: Vec<f64> = view["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|w| w["loadFactor"].as_f64())
        .collect();
    println!(
        "tables published: {}, partitions moved after the first: {balance_moves}, worker loads now: {loads:?}",
        tables.len()
    );
    Ok(())
}

/// A live stream opened on a worker that started after a partition's fence still hides a
/// zombie's reply: the fan-out learns the fence from the owners' commit metadata and the log
/// after the commit, not only from the tail it serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_stream_started_after_a_fence_hides_a_zombie_reply() -> anyhow::Result<()> {
    use meshchat_wire::{AgentReply, ChatRecord, SCHEMA_VERSION, encode, partition_for};
    let _serial = serial().await;
    let opts = MeshOptions {
        token_ms: 60,
        ..MeshOptions::default()
    };
    let mut mesh = TestMesh::start("fanseed", opts).await?;
    let conv = "seed-conv-0";
    let p = partition_for(conv, 12);
    let first = send(&mesh.workers[0].url, conv, "u", "hello").await?;
    wait_reply(&mesh.workers[0].url, conv, &first, SETTLE).await?;
    // the owner's commit passes the partition's fence and records its epoch
    let messages = format!("{}chat.messages", mesh.prefix);
    let log = read_topic(&mesh.bootstrap, &messages).await?;
    let (fence_at, fence) = log
        .iter()
        .filter(|r| r.partition == p && r.value["type"] == "epochFence")
        .map(|r| (r.offset, r.value["epoch"].as_u64().unwrap_or(0)))
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("partition {p} has no fence"))?;
    let group = format!("{}meshchat-owners", mesh.prefix);
    let meta = wait_for("a commit past the fence", SETTLE, || async {
        let (offset, meta) = committed(&mesh.bootstrap, &group, &messages, p).await.ok()??;
        (offset > fence_at).then_some(meta)
    })
    .await?;
    assert!(fence >= 1, "epochs start at 1");
    assert_eq!(
        meta,
        format!("fence={fence}"),
        "the commit carries the fence before it"
    );
    // a worker that starts now owns nothing (no balancer) and only serves live streams
    mesh.balancer.kill().await?;
    mesh.add_worker(3).await?;
    let ws = connect_ws(&mesh.workers[3].url, conv).await?;
    let second = send(&mesh.workers[3].url, conv, "u", "still there?").await?;
    // a zombie of an older epoch answers first
    let zombie = ChatRecord::AgentReply(AgentReply {
        v: SCHEMA_VERSION,
        id: "rep-zombie".into(),
        conversation_id: conv.into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        in_reply_to: second.clone(),
        sender: "agent".into(),
        content: "a reply from a worker declared dead".into(),
        timestamp: time::OffsetDateTime::now_utc(),
        node: "node-zombie".into(),
        epoch: fence.saturating_sub(1),
        error: None,
        completion_tokens: 0,
        attempt: 0,
        chunks: 0,
        cancelled: false,
    });
    let zombie_at = produce(&mesh.bootstrap, &messages, p, conv, &encode(&zombie)?).await?;
    let real = wait_reply(&mesh.workers[3].url, conv, &second, SETTLE).await?;
    assert_ne!(real["id"], "rep-zombie", "GET hides the zombie reply");
    ws.wait("the live reply", SETTLE, |e| {
        e["type"] == "reply" && e["message"]["inReplyTo"] == second.as_str()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live: Vec<_> = ws
        .events()
        .into_iter()
        .filter(|e| e["type"] == "reply" && e["message"]["inReplyTo"] == second.as_str())
        .map(|e| e["message"]["id"].clone())
        .collect();
    let log = read_topic(&mesh.bootstrap, &messages).await?;
    let real_at = log
        .iter()
        .find(|r| r.partition == p && r.value["id"] == real["id"])
        .map(|r| r.offset);
    println!(
        "fence {fence} at {fence_at}; zombie reply at {zombie_at}; real reply at {real_at:?}; live replies {live:?}"
    );
    assert!(
        real_at.is_some_and(|o| o > zombie_at),
        "the zombie's reply came first in the log"
    );
    assert_eq!(
        live,
        vec![real["id"].clone()],
        "live clients see exactly the real reply"
    );
    Ok(())
}

/// SIGTERM stops the balancer even while Kafka does not answer (its metadata calls wait up to
/// 10 s each; before, a stop waited for them, and a table write waited for the broker).
#[tokio::test(flavor = "multi_thread")]
async fn the_balancer_stops_on_sigterm_while_kafka_is_unreachable() -> anyhow::Result<()> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/local-mesh.yaml");
    // nothing listens on the discard port: every metadata request waits out its timeout
    let mut child = tokio::process::Command::new(bin("meshchat-operator"))
        .args(["local", "-f"])
        .arg(&manifest)
        .env("MESHCHAT_KAFKA_BOOTSTRAP", "127.0.0.1:9")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait()?.is_none(), "the balancer waits for Kafka");
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    // a bound for slow machines, not a measurement: it exits in ~1 s here, and took 10-30 s
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("still running 8 s after SIGTERM"))??;
    assert!(status.success(), "{status}");
    Ok(())
}
