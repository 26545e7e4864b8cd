//! The web pages in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/web/ui.mjs`) against a real mesh — three workers, the balancer, a real broker, the
//! fake LLM. The browser acts as a person (types, clicks, presses Enter); this test checks what
//! it saw against the API and the log: a streamed reply, Stop, an LLM failure, a SIGKILL of the
//! page's worker mid-reply (the reply completes once, elsewhere), rate limiting, signing out,
//! the mesh page's migration as admin and operator and its refusal to a plain user, axe-core's
//! accessibility checks, and screenshots (`MESHCHAT_UPDATE_SCREENSHOTS=1` copies them to
//! docs/screenshots for the README).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use meshchat_tests::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Chromium and the npm packages, installed by the project's script when missing.
fn browser_ready() -> anyhow::Result<()> {
    let status = std::process::Command::new(root().join("scripts/browser.sh"))
        .status()
        .context("running scripts/browser.sh")?;
    anyhow::ensure!(status.success(), "scripts/browser.sh failed: {status}");
    Ok(())
}

/// The first conversation named `<name>-<n>` whose partition `owned` holds.
fn conversation_in(name: &str, partitions: i32, owned: &[i64]) -> String {
    (0..)
        .map(|n| format!("{name}-{n}"))
        .find(|c| {
            let p = meshchat_wire::partition_for(&meshchat_wire::conversation_key("default", c), partitions);
            owned.contains(&i64::from(p))
        })
        .unwrap_or_default()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn quantile(mut xs: Vec<f64>, q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs.get(i).copied().unwrap_or(f64::NAN)
}

/// Serious and critical axe-core violations of one page state.
fn serious(out: &Value, page: &str) -> Vec<Value> {
    out["axe"][page]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|x| x["impact"] == "serious" || x["impact"] == "critical")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_and_mesh_pages_work_in_a_real_browser() -> anyhow::Result<()> {
    let _serial = serial().await;
    browser_ready()?;
    let mesh = TestMesh::start(
        "webui",
        MeshOptions {
            token_ms: 20,
            // the documented per-user message limit, which the page must show when hit
            worker_env: vec![
                ("MESHCHAT_USER_MESSAGES_PER_MINUTE".into(), "120".into()),
                ("MESHCHAT_USER_MESSAGE_BURST".into(), "100".into()),
            ],
            ..MeshOptions::default()
        },
    )
    .await?;
    let partitions = 12;
    let user = auth::jwt("default", "alice", "user");
    let (page_worker, mesh_worker) = (&mesh.workers[0], &mesh.workers[2]);

    // the conversation the page follows while its worker is killed: node-0 owns it, so the
    // reply itself must move too (the new owner answers again; the page resumes elsewhere)
    let owned = mesh.owned(0).await.context("node-0's partitions")?;
    let kill_conv = conversation_in("web-kill", partitions, &owned);
    let first = send_as(&page_worker.url, &user, &kill_conv, "alice", "Hi, let's talk").await?;
    wait_reply(&page_worker.url, &kill_conv, &first, T).await?;
    // the conversation the admin moves from the mesh page: not on node-0 (killed by then)
    let others: Vec<i64> = (0..i64::from(partitions))
        .filter(|p| !owned.contains(p))
        .collect();
    let move_conv = conversation_in("web-move", partitions, &others);
    let m = send(&mesh_worker.url, &move_conv, "root", "Please move me").await?;
    wait_reply(&mesh_worker.url, &move_conv, &m, T).await?;
    // a conversation longer than a page of history (30): 40 messages and their replies
    let long_conv = "web-long";
    for i in 0..40 {
        send_as(
            &mesh.workers[1].url,
            &user,
            long_conv,
            "alice",
            &format!("long message {i}"),
        )
        .await?;
    }
    // every message answered (those past the pending cap at once, with an error reply)
    wait_for("40 messages and 40 replies", T, || async {
        let (_, v) = conversation_as(&mesh.workers[1].url, &user, long_conv)
            .await
            .ok()?;
        (v["messages"].as_array()?.len() == 80).then_some(())
    })
    .await?;
    let move_partition = meshchat_wire::partition_for(
        &meshchat_wire::conversation_key("default", &move_conv),
        partitions,
    );

    let dir = std::env::temp_dir()
        .join("meshchat-tests")
        .join(mesh.prefix.trim_end_matches('.'))
        .join("browser");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config.json");
    let result = dir.join("result.json");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&json!({
            "chromium": "/usr/bin/chromium",
            "artifacts": dir,
            "out": result,
            "chatUrl": page_worker.url,
            "userToken": user,
            "adminToken": auth::admin("root"),
            "operatorToken": auth::operator(),
            "killPid": page_worker.pid().context("node-0's pid")?,
            "killConversation": kill_conv,
            "longConversation": long_conv,
            "mesh": {"url": mesh_worker.url, "conversation": move_conv, "partition": move_partition},
        }))?,
    )?;
    let run = tokio::process::Command::new("node")
        .arg(root().join("tests/web/ui.mjs"))
        .arg(&config)
        .current_dir(root().join("tests/web"))
        .status();
    let status = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .context("the browser run took over 10 minutes")??;
    let out: Value =
        serde_json::from_slice(&std::fs::read(&result).context("the browser run wrote no result")?)?;
    for s in out["steps"].as_array().into_iter().flatten() {
        println!("browser step: {} — {} ms, ok {}", s["name"], s["ms"], s["ok"]);
    }
    println!("artifacts (screenshots, result.json): {}", dir.display());
    assert!(
        status.success() && out["ok"] == true,
        "the browser run failed: {}",
        out["error"]
    );

    // --- what a person would have seen, checked against the API ---
    let alice = |base: &str, id: &str| {
        let (base, id, token) = (base.to_string(), id.to_string(), user.clone());
        async move { conversation_as(&base, &token, &id).await }
    };
    let live_url = &mesh.workers[1].url;
    assert!(
        out["wrongTokenAlert"]
            .as_str()
            .unwrap_or_default()
            .contains("not accepted"),
        "{}",
        out["wrongTokenAlert"]
    );
    assert_eq!(out["who"], "alice · default (user)");
    assert_eq!(out["meshLinkShownToUser"], false);

    // the first conversation: created on the page, one message, its reply streamed then stored
    let new_id = out["newConversationId"]
        .as_str()
        .context("the new conversation's id")?;
    let (status, view) = alice(live_url, new_id).await?;
    assert_eq!(status, 200, "{view}");
    let msgs = view["messages"].as_array().cloned().unwrap_or_default();
    let stored_first = msgs
        .iter()
        .find(|m| !m["inReplyTo"].is_null())
        .context("a stored reply")?;
    assert_eq!(out["sawStreaming"], true);
    assert_eq!(
        out["firstReply"]["text"], stored_first["content"],
        "the page shows the stored reply"
    );
    assert!(!out["firstReply"]["text"].as_str().unwrap_or_default().is_empty());
    assert!(
        out["presence"]
            .as_str()
            .unwrap_or_default()
            .contains("alice (online)"),
        "{}",
        out["presence"]
    );

    // Stop: the reply ended stopped (stored as cancelled); the next message answered
    assert_eq!(out["stopped"]["stopped"], true, "{}", out["stopped"]);
    assert_eq!(out["stopped"]["status"], "Stopped");
    let stored_stopped = msgs
        .iter()
        .find(|m| m["cancelled"] == true)
        .context("the cancelled reply in the log")?;
    assert_eq!(out["stopped"]["text"], stored_stopped["content"]);
    assert_eq!(out["afterStop"]["stopped"], false);
    assert_eq!(out["afterStop"]["error"], false);
    assert!(!out["afterStop"]["text"].as_str().unwrap_or_default().is_empty());
    assert_eq!(out["stopDisabledAfter"], true);
    // the LLM failure: an error reply saying so, without the LLM's address
    assert_eq!(out["failed"]["error"], true, "{}", out["failed"]);
    let failed_status = out["failed"]["status"].as_str().unwrap_or_default();
    assert!(failed_status.starts_with("Error: "), "{failed_status}");
    assert!(!failed_status.contains(&mesh.llm.url), "{failed_status}");
    let users = msgs.iter().filter(|m| m["inReplyTo"].is_null()).count();
    let replies = msgs.iter().filter(|m| !m["inReplyTo"].is_null()).count();
    assert_eq!(
        (users, replies),
        (4, 4),
        "four messages, each answered once: {view}"
    );

    // the long history: a first page of 30, then everything by scrolling up, each once
    assert_eq!(out["longFirstPage"], 30, "{}", out["longFirstPage"]);
    assert_eq!(out["longOlderButton"], true);
    let long_ids: Vec<&str> = out["longAll"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let (_, whole) = alice(live_url, long_conv).await?;
    let stored: Vec<&str> = whole["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(stored.len(), 80);
    assert_eq!(
        long_ids, stored,
        "the page shows the stored history, in order, each once"
    );
    assert_eq!(out["longFirstText"], "long message 0");
    // the list: a page of 20, then the next page, each conversation once
    assert_eq!(out["listFirstPage"], 20);
    let listed: Vec<&str> = out["listTwoPages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = listed.iter().collect();
    assert!(listed.len() > 20 && distinct.len() == listed.len(), "{listed:?}");

    // SIGKILL of the page's worker mid-reply: the page went on at another worker and shows the
    // complete reply once; the log holds it once
    assert_ne!(
        out["killAfterBase"], out["killBase"],
        "the page moved to another worker"
    );
    assert_eq!(out["killBase"], page_worker.url.as_str());
    assert!(
        !out["killTextBefore"].as_str().unwrap_or_default().is_empty(),
        "killed mid-reply"
    );
    assert_eq!(out["killReply"]["streaming"], false);
    assert_eq!(out["killReply"]["error"], false, "{}", out["killReply"]);
    assert_eq!(out["killReplyShown"], 1, "the reply shows once");
    assert_eq!(out["metrics"]["duplicates"], 0, "no event reached the page twice");
    assert!(out["metrics"]["reconnects"].as_u64().unwrap_or(0) >= 1);
    let kill_msg = out["killMessageId"].as_str().context("the killed message's id")?;
    let stored = wait_reply(live_url, &kill_conv, kill_msg, T).await?;
    assert_eq!(
        out["killReply"]["text"], stored["content"],
        "the page shows the stored reply"
    );
    let (_, kview) = alice(live_url, &kill_conv).await?;
    let kmsgs = kview["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        kmsgs.iter().filter(|m| m["inReplyTo"] == kill_msg).count(),
        1,
        "one reply in the log: {kview}"
    );
    let shown_users = out["killUserMessages"].as_array().map_or(0, Vec::len);
    assert_eq!(
        shown_users,
        kmsgs.iter().filter(|m| m["inReplyTo"].is_null()).count(),
        "the page shows each user message once"
    );
    println!(
        "page's worker killed mid-reply: the page showed the complete reply {} ms later ({} reconnects, LLM asked {} times)",
        out["killRecoveredMs"],
        out["metrics"]["reconnects"],
        mesh.llm.calls("webkill").await?
    );

    // rate limited, with the wait; signed out
    assert!(out["burstLimited"].as_u64().unwrap_or(0) >= 1);
    let rate = out["rateAlert"].as_str().unwrap_or_default();
    assert!(
        rate.starts_with("Rate limited: wait ") && rate.contains(" s "),
        "{rate}"
    );
    assert_eq!(
        out["rateComposerKept"], "Am I limited?",
        "the refused message stays in the box"
    );
    assert!(
        out["signedOutAlert"]
            .as_str()
            .unwrap_or_default()
            .contains("signed out"),
        "{}",
        out["signedOutAlert"]
    );
    assert_eq!(out["signInShownAgain"], true);

    // the mesh page
    assert!(
        out["meshUserAlert"]
            .as_str()
            .unwrap_or_default()
            .contains("plain user")
    );
    assert_eq!(out["meshUserGridCells"], 0);
    assert_eq!(out["meshUserPanelVisible"], false);
    assert_ne!(out["meshBefore"]["owner"], out["meshAfter"]["owner"]);
    assert_eq!(out["meshAfter"]["owner"], out["meshTarget"]);
    assert_ne!(
        out["meshBefore"]["colour"], out["meshAfter"]["colour"],
        "the partition changed colour"
    );
    let listed = out["meshMoveListed"].as_str().unwrap_or_default();
    assert!(
        listed.contains(&format!("Partition {move_partition}"))
            && listed.contains(&format!("→ {}", out["meshTarget"].as_str().unwrap_or_default()))
            && listed.contains("paused"),
        "{listed}"
    );
    let workers = out["meshWorkersShown"].as_array().cloned().unwrap_or_default();
    assert!(
        workers
            .iter()
            .any(|w| w["id"] == "node-0" && w["state"] == "dead"),
        "the killed worker shows dead: {workers:?}"
    );
    assert!(
        workers
            .iter()
            .filter(|w| w["state"] == "alive")
            .all(|w| w["spark"] == true)
    );
    assert!(out["meshGeneration"].as_u64().unwrap_or(0) > 0);
    assert_eq!(out["meshPartitionButtonDisabledForAdmin"], true);
    assert_eq!(out["operatorMove"]["owner"], out["operatorMove"]["to"]);
    // the API agrees with what the page showed
    let (_, api_mesh) = {
        let resp = http()
            .get(format!("{live_url}/api/mesh"))
            .bearer_auth(auth::operator())
            .send()
            .await?;
        (resp.status(), resp.json::<Value>().await?)
    };
    let owner_of = |p: i64| {
        api_mesh["partitions"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["partition"] == p))
            .map(|x| x["owner"].clone())
    };
    assert_eq!(
        owner_of(i64::from(move_partition)),
        Some(out["meshTarget"].clone())
    );

    // accessibility: nothing serious or critical on any page state
    for page in ["sign-in", "chat", "mesh"] {
        let bad = serious(&out, page);
        assert!(bad.is_empty(), "axe-core on {page}: {bad:#?}");
    }
    let csp = out["cspViolations"].as_array().cloned().unwrap_or_default();
    assert!(csp.is_empty(), "Content-Security-Policy violations: {csp:#?}");
    let page_errors: Vec<&Value> = out["console"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.as_str().is_some_and(|c| c.contains("page error")))
        .collect();
    assert!(
        page_errors.is_empty(),
        "uncaught errors in the pages: {page_errors:#?}"
    );

    // measured, not asserted
    let token_ms: Vec<f64> = out["metrics"]["tokenToScreenMs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    println!(
        "chat page: first contentful paint {:.0} ms; streamed token to screen (next frame) median {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} tokens",
        out["firstPaintMs"].as_f64().unwrap_or(f64::NAN),
        median(token_ms.clone()),
        quantile(token_ms.clone(), 0.95),
        token_ms.iter().copied().fold(0.0, f64::max),
        token_ms.len()
    );
    if std::env::var_os("MESHCHAT_UPDATE_SCREENSHOTS").is_some() {
        let docs = root().join("docs/screenshots");
        std::fs::create_dir_all(&docs)?;
        for name in ["chat", "mesh", "sign-in"] {
            std::fs::copy(dir.join(format!("{name}.png")), docs.join(format!("{name}.png")))?;
        }
    }
    Ok(())
}
