//! Measures handoffs and failover on a real broker with worker and balancer processes:
//! per moved partition the pause (old owner stops answering → new owner live), records
//! replayed per handoff, and the time from SIGKILL of an owner to every partition served
//! again. Prints a Markdown report; `--json FILE` also writes the figures.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use meshchat_tests::bench::percentiles;
use meshchat_tests::*;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Planned migrations to run (each moves all of one worker's partitions).
    #[arg(long, default_value_t = 12)]
    migrations: usize,
    /// Steady load during the run, messages/s.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<String>,
}

fn ts(v: &Value) -> Option<f64> {
    let t = time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // the default heartbeat timeout (5 s); no periodic balancing: only the migrations and the
    // failover move partitions
    let opts = MeshOptions {
        partitions: 24,
        interval_secs: 3600,
        cooldown_secs: 1,
        heartbeat_timeout_secs: 5,
        ..MeshOptions::default()
    };
    let mut mesh = TestMesh::start("handoff-bench", opts).await?;
    let targets = Arc::new(Mutex::new(
        mesh.workers.iter().map(|w| w.url.clone()).collect::<Vec<_>>(),
    ));
    let load = Load::start(targets.clone(), 96, args.rate, 0, "hb");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // each migration moves four partitions to one worker, keeping the mesh balanced so the
    // balancer itself has no reason to move anything
    for m in 0..args.migrations {
        let target = m % 3;
        // four partitions the target does not hold yet, so each migration makes four moves
        let held = mesh.owned(target).await.unwrap_or_default();
        let others: Vec<i32> = (0..24).filter(|p| !held.contains(&i64::from(*p))).collect();
        let parts: Vec<i32> = (0..4)
            .filter_map(|k| others.get((m * 5 + k * 3) % others.len().max(1)).copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let resp = http()
            .post(format!("{}/api/agent/migrate", mesh.workers[(m + 1) % 3].url))
            .bearer_auth(meshchat_tests::auth::operator())
            .json(&json!({"targetNode": format!("node-{target}"), "partitions": parts}))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        if status == 409 && body.contains("already on") {
            continue;
        }
        anyhow::ensure!(status == 200, "migration {m} refused: {body}");
        wait_for(
            "the moved partitions to be live on the target",
            Duration::from_secs(60),
            || async {
                let owned = mesh.owned(target).await?;
                let others_settled = mesh.owned((target + 1) % 3).await.is_some()
                    && mesh.owned((target + 2) % 3).await.is_some();
                (others_settled && parts.iter().all(|p| owned.contains(&i64::from(*p)))).then_some(())
            },
        )
        .await?;
        // requested moves go through the balancer's cooldown (1 s here): a partition this move
        // touched may be in the next one
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // give node-2 a third of the partitions, then kill it
    wait_for("node-2 to serve partitions", Duration::from_secs(60), || async {
        mesh.owned(2).await.filter(|o| !o.is_empty()).map(|_| ())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Ok(mut u) = targets.lock() {
        u.retain(|x| *x != mesh.workers[2].url);
    }
    let killed = Instant::now();
    mesh.workers[2].kill().await?;
    mesh.wait_owned_by(&[0, 1], Duration::from_secs(60)).await?;
    let failover_s = killed.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = load.stop().await;
    let (sent, replied, lost, duplicated) = verify_exactly_once(
        &mesh.workers[0].url,
        &accepted,
        &HashMap::new(),
        Duration::from_secs(60),
    )
    .await?;

    let events = read_topic(&mesh.bootstrap, &format!("{}chat.events", mesh.prefix)).await?;
    let mut steps: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e.value["type"] == "handoff") {
        let step = e.value["step"].as_str().unwrap_or("?").to_string();
        *steps.entry(step).or_default() += 1;
    }
    let mut releasing: HashMap<(i64, u64), f64> = HashMap::new();
    let mut live: Vec<((i64, u64), f64, u64)> = Vec::new();
    for e in events.iter().filter(|e| e.value["type"] == "handoff") {
        let key = (
            e.value["partition"].as_i64().unwrap_or(-1),
            e.value["epoch"].as_u64().unwrap_or(0),
        );
        let Some(t) = ts(&e.value["timestamp"]) else {
            continue;
        };
        match e.value["step"].as_str() {
            Some("releasing") => {
                releasing.insert(key, t);
            }
            Some("live") => live.push((key, t, e.value["replayed"].as_u64().unwrap_or(0))),
            _ => {}
        }
    }
    let mut pauses: Vec<f64> = live
        .iter()
        .filter_map(|(k, t, _)| releasing.get(k).map(|r| t - r))
        .collect();
    let pause = percentiles(&mut pauses);
    let mut replayed: Vec<f64> = live
        .iter()
        .filter(|(k, _, _)| releasing.contains_key(k))
        .map(|(_, _, n)| *n as f64)
        .collect();
    let replay = percentiles(&mut replayed);
    println!("| metric | value |\n|---|---|");
    println!("| planned moves measured | {} |", pause.n);
    println!("| handoff events by step | {steps:?} |");
    println!("| handoff pause p50 | {:.0} ms |", pause.p50);
    println!("| handoff pause p99 | {:.0} ms |", pause.p99);
    println!("| handoff pause max | {:.0} ms |", pause.max);
    println!("| records replayed per handoff (median) | {:.0} |", replay.p50);
    println!("| failover: SIGKILL → all partitions served | {failover_s:.2} s |");
    println!("| messages sent / replied / lost / duplicated | {sent} / {replied} / {lost} / {duplicated} |");
    if let Some(path) = args.json {
        let out = json!({
            "handoff_moves": pause.n,
            "handoff_pause_p50_ms": pause.p50,
            "handoff_pause_p99_ms": pause.p99,
            "replayed_per_handoff_median": replay.p50,
            "failover_s": failover_s,
            "sent": sent, "replied": replied, "lost": lost, "duplicated": duplicated,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
