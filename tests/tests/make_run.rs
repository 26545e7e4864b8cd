//! The README's `make run`, as a new user runs it (on ports of its own): the mesh comes up and
//! prints its URLs, the README's curl lines work against it, a worker killed with `kill -9`
//! leaves the others serving its partitions, Ctrl-C stops everything; and `make run` again
//! afterwards gives every worker its share of the partitions back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use meshchat_tests::{conversation_as, free_ports, http, reply_to, send_as, wait_for};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Ports and directories of one `make run`.
struct Env {
    kafka_port: u16,
    http_port: u16,
    internal_port: u16,
    llm_port: u16,
    dir: PathBuf,
}

/// A running `make run`, its output collected line by line.
struct MakeRun {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

impl MakeRun {
    async fn start(env: &Env) -> anyhow::Result<Self> {
        // as from a terminal, SIGINT not ignored: a harness started in the background (`&`,
        // nohup) hands it down ignored, and a shell cannot take that back (its Ctrl-C trap
        // would never run)
        let mut cmd = Command::new("env");
        cmd.args(["--default-signal=INT", "make", "-s"])
            .arg("-C")
            .arg(repo())
            .arg("run")
            .env("MESHCHAT_RUN_KAFKA_PORT", env.kafka_port.to_string())
            .env("MESHCHAT_RUN_KAFKA_DIR", env.dir.join("kafka"))
            .env("MESHCHAT_RUN_PORT", env.http_port.to_string())
            .env("MESHCHAT_RUN_LLM_PORT", env.llm_port.to_string())
            .env("MESHCHAT_RUN_INTERNAL_PORT", env.internal_port.to_string())
            .env("MESHCHAT_RUN_STATE", env.dir.join("state"))
            .env_remove("OPENAI_API_KEY")
            .env_remove("MESHCHAT_LLM_BASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // its own process group, as a terminal gives it: Ctrl-C reaches the whole group
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning make run")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("make run | {line}");
                    output.lock().expect("lock").push(line);
                }
            });
        }
        let run = Self { child, output };
        run.wait_line("MeshChat is running.", Duration::from_secs(300))
            .await?;
        Ok(run)
    }

    fn printed(&self, text: &str) -> Option<String> {
        self.output
            .lock()
            .expect("lock")
            .iter()
            .find(|l| l.contains(text))
            .cloned()
    }

    async fn wait_line(&self, text: &str, timeout: Duration) -> anyhow::Result<String> {
        wait_for(&format!("make run printing {text:?}"), timeout, || async {
            self.printed(text)
        })
        .await
    }

    fn pgid(&self) -> anyhow::Result<i32> {
        self.child.id().map(|p| p as i32).context("make run has exited")
    }

    /// Ctrl-C: SIGINT to the whole process group; waits for everything to stop.
    async fn interrupt(mut self) -> anyhow::Result<()> {
        let pgid = self.pgid()?;
        let status = std::process::Command::new("kill")
            .args(["-INT", "--", &format!("-{pgid}")])
            .status()?;
        anyhow::ensure!(status.success(), "kill -INT -{pgid}");
        let exit = tokio::time::timeout(Duration::from_secs(90), self.child.wait())
            .await
            .context("make run still running 90 s after Ctrl-C")??;
        // make itself dies of the SIGINT a terminal's Ctrl-C sends; the script below it stops
        // the mesh and exits cleanly
        use std::os::unix::process::ExitStatusExt;
        anyhow::ensure!(
            exit.success() || exit.signal() == Some(2),
            "make run exited with {exit} after Ctrl-C"
        );
        self.wait_line("==> stopped", Duration::from_secs(5)).await?;
        Ok(())
    }
}

/// Runs the README's OpenAI client example (Python, the official `openai` package) against
/// tests/web/smoke.mjs in Debian's Chromium: sign in on the chat page, chat, open the mesh
/// page as the admin; what it saw.
async fn browser_smoke(chat: &str, mesh: &str, user: &str, admin: &str) -> anyhow::Result<Value> {
    let status = std::process::Command::new(repo().join("scripts/browser.sh")).status()?;
    anyhow::ensure!(status.success(), "scripts/browser.sh failed");
    let out = tokio::process::Command::new("node")
        .arg("smoke.mjs")
        .args([chat, mesh, user, admin])
        .current_dir(repo().join("tests/web"))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .context("the browser smoke took over 3 minutes")??;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("smoke.mjs printed {text}"))
}

/// `env`'s first worker with the `ACME_USER` key make run printed; answers what it printed.
async fn readme_openai_example(env: &Env, run: &MakeRun) -> anyhow::Result<String> {
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let section = readme
        .find("**OpenAI-compatible endpoint.**")
        .context("README: no OpenAI section")?;
    let start = readme[section..]
        .find("```python\n")
        .context("README: no python example")?
        + section
        + 10;
    let code = &readme[start..start + readme[start..].find("```").context("unterminated")?];
    let code = code.replace(":8080/", &format!(":{}/", env.http_port));
    let key = run
        .printed("ACME_USER=")
        .and_then(|l| l.trim().strip_prefix("ACME_USER=").map(str::to_string))
        .context("make run printed no ACME_USER")?;
    let venv =
        tokio::task::spawn_blocking(|| meshchat_tests::python::venv_with(&["openai==3.57.0"])).await??;
    let out = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(format!("ACME_USER = {key:?}\n{code}"))
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "the README's OpenAI example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The README's curl lines of the quick start, pointed at `env`'s ports.
fn readme_curls(env: &Env) -> anyhow::Result<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let start = readme
        .find("```sh\nsource .run/dev-credentials.env")
        .context("README: no quick-start curl block")?;
    let block = &readme[start + 6..];
    let block = &block[..block.find("```").context("README: unterminated block")?];
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // a trailing comment is prose, not part of the command
        let code = line.split(" #").next().unwrap_or(line).trim_end();
        match code.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(code);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    let port = |i: u16| (8080 + i, env.http_port + i);
    let state = env.dir.join("state");
    let credentials = format!("{}/", state.display());
    // the first line sources the credentials: each command runs in a shell of its own
    let (source, curls) = commands.split_first().context("README: an empty curl block")?;
    anyhow::ensure!(
        source.starts_with("source "),
        "README: the block starts with {source}"
    );
    let source = source.replace(".run/", &credentials);
    Ok(curls
        .iter()
        .map(|c| {
            let c = [port(0), port(1), port(2)]
                .iter()
                .fold(c.clone(), |c, (from, to)| {
                    c.replace(&format!(":{from}/"), &format!(":{to}/"))
                });
            format!("{source}; {c}")
        })
        .collect())
}

async fn sh(command: &str) -> anyhow::Result<String> {
    let out = Command::new("bash").arg("-c").arg(command).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn json_of(command: &str) -> anyhow::Result<Value> {
    let text = sh(command).await?;
    serde_json::from_str(&text).with_context(|| format!("{command}: not JSON: {text}"))
}

/// A development credential `make run` created (`ACME_USER`, `MESH_OPERATOR`…).
fn dev_token(env: &Env, name: &str) -> anyhow::Result<String> {
    let file = std::fs::read_to_string(env.dir.join("state/dev-credentials.env"))?;
    file.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
        .with_context(|| format!("no {name} in dev-credentials.env"))
}

/// Partitions worker `url` holds live, `None` while a handoff is under way or it is down.
async fn owned(url: &str) -> Option<Vec<i64>> {
    let token = TOKEN.get()?;
    let s: Value = http()
        .get(format!("{url}/api/agent/status"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let handoffs = s["handoffs"].as_array().map_or(0, Vec::len);
    let owned = s["ownedPartitions"]
        .as_array()?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    (handoffs == 0).then_some(owned)
}

/// Waits until `urls` together hold all 24 partitions, each once; returns the counts.
async fn all_held_by(urls: &[String], timeout: Duration) -> anyhow::Result<Vec<usize>> {
    wait_for("all 24 partitions held", timeout, || async {
        let mut counts = Vec::new();
        let mut all = std::collections::BTreeSet::new();
        for u in urls {
            let o = owned(u).await?;
            counts.push(o.len());
            all.extend(o);
        }
        (all.len() == 24 && counts.iter().sum::<usize>() == 24).then_some(counts)
    })
    .await
}

/// The credential the test's own status reads use (set once `make run` created it).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[tokio::test(flavor = "multi_thread")]
async fn make_run_serves_survives_a_kill_and_restarts_balanced() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("meshchat-make-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        kafka_port: free_ports(2)?,
        http_port: free_ports(3)?,
        internal_port: free_ports(3)?,
        llm_port: free_ports(1)?,
        dir,
    };
    let urls: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", env.http_port + i))
        .collect();
    let internal: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", env.internal_port + i))
        .collect();
    let run = MakeRun::start(&env).await?;
    for u in urls.iter().chain(&internal) {
        anyhow::ensure!(run.printed(u).is_some(), "make run did not print {u}");
    }
    // development credentials: two tenants with a user and an admin each, and the operator
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(
        env.dir.join("state/dev-credentials.json"),
    )?)?;
    let creds = creds["credentials"].as_array().context("credentials")?.clone();
    for (tenant, role) in [
        ("acme", "user"),
        ("acme", "admin"),
        ("globex", "user"),
        ("globex", "admin"),
    ] {
        anyhow::ensure!(
            creds
                .iter()
                .any(|c| c["tenant"] == tenant && c["role"] == role && c["token"].is_string()),
            "no {tenant} {role} credential in {creds:?}"
        );
    }
    let acme_user = dev_token(&env, "ACME_USER")?;
    anyhow::ensure!(
        run.printed(&acme_user).is_some(),
        "make run did not print the credentials"
    );
    let _ = TOKEN.set(dev_token(&env, "ACME_ADMIN")?);
    all_held_by(&urls, Duration::from_secs(30)).await?;

    // the web pages it printed, in a browser, with the keys it printed
    let chat_page = run
        .printed("chat page:")
        .context("make run printed no chat page")?;
    let mesh_page = run
        .printed("mesh page:")
        .context("make run printed no mesh page")?;
    let url_in = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_string)
    };
    let (chat_url, mesh_url) = (
        url_in(&chat_page).context("no URL on the chat page line")?,
        url_in(&mesh_page).context("no URL on the mesh page line")?,
    );
    let smoke = browser_smoke(&chat_url, &mesh_url, &acme_user, &dev_token(&env, "ACME_ADMIN")?).await?;
    assert_eq!(smoke["ok"], true, "{smoke}");
    assert_eq!(smoke["who"], "alice · acme (user)");
    assert!(
        smoke["reply"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Reply to")),
        "{smoke}"
    );
    assert_eq!(smoke["meshCells"], 24, "{smoke}");
    assert_eq!(smoke["meshWorkers"], 3, "{smoke}");

    // what a client reached before: the drain, probes and metrics are on the internal port only.
    // A `GET /drain` on the public port answers 404 and the worker goes on serving.
    for path in ["/drain", "/healthz", "/readyz", "/metrics"] {
        let resp = http().get(format!("{}{path}", urls[0])).send().await?;
        assert_eq!(resp.status(), 404, "{path} on the public port");
    }
    let resp = http().get(format!("{}/readyz", internal[0])).send().await?;
    assert_eq!(resp.status(), 200, "still ready");
    let metrics = http()
        .get(format!("{}/metrics", internal[0]))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("meshchat_"), "metrics on the internal port");

    // the README's curl lines, in order; the live stream is opened before the message is sent
    let curls = readme_curls(&env)?;
    let find = |what: &str| {
        curls
            .iter()
            .find(|c| c.contains(what))
            .cloned()
            .with_context(|| format!("README has no curl line for {what}"))
    };
    let sse_line = find("/events")?;
    let mut sse = Command::new("bash")
        .arg("-c")
        .arg(format!("{sse_line} --max-time 60"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let sse_out = Arc::new(Mutex::new(String::new()));
    if let Some(stdout) = sse.stdout.take() {
        let sse_out = sse_out.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut s = sse_out.lock().expect("lock");
                s.push_str(&l);
                s.push('\n');
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = json_of(&find("/api/chat/send")?).await?;
    assert_eq!(sent["message"], "Message sent", "{sent}");
    let message_id = sent["messageId"].as_str().context("messageId")?.to_string();
    let get_line = find("/api/chat/conversation/conv-123")?;
    let conv = wait_for(
        "the reply, read through the README's GET",
        Duration::from_secs(30),
        || async {
            let c = json_of(&get_line).await.ok()?;
            reply_to(&c, &message_id).is_some().then_some(c)
        },
    )
    .await?;
    assert_eq!(conv["id"], "conv-123");
    assert_eq!(
        conv["participants"][0], "alice",
        "the sender is the credential's user"
    );
    // the idempotent send, run twice as the README says: one message, the same id
    let keyed_line = find("Idempotency-Key")?;
    let first = json_of(&keyed_line).await?;
    let again = json_of(&keyed_line).await?;
    let keyed_id = first["messageId"].as_str().context("messageId")?.to_string();
    assert_eq!(again["messageId"], first["messageId"], "{first} {again}");
    let conv = wait_for("the keyed message's reply", Duration::from_secs(30), || async {
        let c = json_of(&get_line).await.ok()?;
        reply_to(&c, &keyed_id).is_some().then_some(c)
    })
    .await?;
    let copies = conv["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["id"] == keyed_id.as_str()).count());
    assert_eq!(copies, 1, "stored once: {conv}");
    let foreign = json_of(&find("GLOBEX_USER")?).await?;
    assert_eq!(foreign["error"], "not_found", "another tenant's read: {foreign}");
    let anonymous = http()
        .get(format!("{}/api/chat/conversation/conv-123", urls[1]))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401, "no credential");
    wait_for(
        "the reply on the README's SSE stream",
        Duration::from_secs(10),
        || async {
            let s = sse_out.lock().expect("lock").clone();
            (s.contains("event: message") && s.contains("event: token") && s.contains("event: reply"))
                .then_some(())
        },
    )
    .await?;
    let _ = sse.kill().await;
    let status = json_of(&find("/api/agent/status")?).await?;
    assert_eq!(
        (status["nodeId"].as_str(), status["status"].as_str()),
        (Some("node-0"), Some("healthy"))
    );
    let mesh = json_of(&find("/api/mesh")?).await?;
    assert_eq!(mesh["partitions"].as_array().map(Vec::len), Some(24), "{mesh}");
    let moved = json_of(&find("/api/agent/migrate")?).await?;
    assert_eq!(moved["message"], "Migration started", "{moved}");
    let moving: Vec<i64> = moved["partitions"]
        .as_array()
        .context("partitions")?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    wait_for(
        "node-0's partitions on node-1",
        Duration::from_secs(30),
        || async {
            let o = owned(&urls[1]).await?;
            moving.iter().all(|p| o.contains(p)).then_some(())
        },
    )
    .await?;

    // the README's OpenAI client example, as printed, with the printed ACME_USER key
    let answer = readme_openai_example(&env, &run).await?;
    assert!(answer.starts_with(r#"Reply to "Hello!""#), "{answer}");

    // kill -9 a worker, with the pid make run printed
    let processes = run.printed("processes:").context("make run printed no pids")?;
    let pid = processes
        .split_whitespace()
        .find_map(|w| w.strip_prefix("worker-node-2="))
        .context("no pid for node-2")?
        .to_string();
    let node2_held = owned(&urls[2]).await.unwrap_or_default();
    sh(&format!("kill -9 {pid}")).await?;
    let reported = run
        .wait_line(
            &format!("worker node-2 (pid {pid}) exited"),
            Duration::from_secs(10),
        )
        .await?;
    assert!(reported.contains("the rest keep serving"), "{reported}");
    let counts = all_held_by(&urls[..2], Duration::from_secs(30)).await?;
    println!("after kill -9 of node-2 (it held {node2_held:?}): node-0/node-1 hold {counts:?}");
    // a conversation of a partition node-2 held is answered by the survivors
    let conv = (0..1000)
        .map(|i| format!("after-kill-{i}"))
        .find(|c| node2_held.contains(&i64::from(meshchat_wire::partition_for(&format!("acme/{c}"), 24))))
        .context("a conversation on node-2's partitions")?;
    let id = send_as(&urls[0], &acme_user, &conv, "ignored", "still there?").await?;
    wait_for("a reply from the survivors", Duration::from_secs(30), || async {
        let (_, c) = conversation_as(&urls[1], &acme_user, &conv).await.ok()?;
        reply_to(&c, &id).is_some().then_some(())
    })
    .await?;
    anyhow::ensure!(run.pgid().is_ok(), "make run stopped when a worker died");
    run.interrupt().await?;
    for u in urls.iter().chain(&internal) {
        anyhow::ensure!(
            http().get(format!("{u}/api/agent/status")).send().await.is_err(),
            "{u} still serves after Ctrl-C"
        );
    }

    // make run again: the table still says node-0 and node-1 own everything; the quiet mesh is
    // spread so that every worker gets its share
    let run = MakeRun::start(&env).await?;
    let counts = wait_for(
        "every worker holding its share again",
        Duration::from_secs(60),
        || async {
            let mut counts = Vec::new();
            for u in &urls {
                counts.push(owned(u).await?.len());
            }
            let (min, max) = (counts.iter().min()?, counts.iter().max()?);
            (counts.iter().sum::<usize>() == 24 && max - min <= 1).then_some(counts)
        },
    )
    .await?;
    println!("after a restart: partitions per worker {counts:?}");
    run.interrupt().await?;
    // no credential and not the mesh secret in any log of the whole run
    let mut secrets: Vec<String> = creds
        .iter()
        .filter_map(|c| c["token"].as_str().map(str::to_string))
        .collect();
    secrets.push(
        std::fs::read_to_string(env.dir.join("state/mesh-secret"))?
            .trim()
            .to_string(),
    );
    let mut files = 0;
    for entry in std::fs::read_dir(env.dir.join("state/logs"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        files += 1;
        for s in &secrets {
            anyhow::ensure!(
                !text.contains(s.as_str()),
                "{} holds a credential",
                path.display()
            );
        }
    }
    anyhow::ensure!(files >= 5, "the run's logs: {files} files");
    println!(
        "{files} log files of the whole run hold none of {} secrets",
        secrets.len()
    );
    let _ = std::fs::remove_dir_all(&env.dir);
    Ok(())
}
