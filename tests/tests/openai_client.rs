//! The OpenAI-compatible endpoint driven by OpenAI's official Python client (from PyPI, in the
//! cached virtualenv), as an application would use it: list the model, complete whole and
//! streamed in one conversation, name a conversation by `user`, and get OpenAI's errors.
//! Then the log: every message stored once and answered once; tenants kept apart.

use std::time::Duration;

use meshchat_tests::*;
use serde_json::Value;

/// Pinned: the test checks the shapes this version parses.
const OPENAI: &str = "openai==3.57.0";

const SCRIPT: &str = r#"
import json, os, openai
from openai import OpenAI

base, model, conv = os.environ["BASE"] + "/v1", os.environ["MODEL"], os.environ["CONV"]
c = OpenAI(base_url=base, api_key=os.environ["KEY"], max_retries=0)
header = {"X-MeshChat-Conversation": conv}
out = {"models": [m.id for m in c.models.list().data]}

r = c.chat.completions.create(model=model, extra_headers=header, messages=[
    {"role": "system", "content": "ignored: the ChatAgent has its prompt"},
    {"role": "user", "content": "hello one"}])
out["whole"] = {"id": r.id, "text": r.choices[0].message.content, "finish": r.choices[0].finish_reason}

pieces, finish, ids = [], None, set()
for ch in c.chat.completions.create(model=model, extra_headers=header, stream=True, messages=[
        {"role": "user", "content": "hello one"}, {"role": "assistant", "content": "..."},
        {"role": "user", "content": "hello two"}]):
    ids.add(ch.id)
    if ch.choices:
        if ch.choices[0].delta.content:
            pieces.append(ch.choices[0].delta.content)
        finish = ch.choices[0].finish_reason or finish
out["stream"] = {"pieces": pieces, "finish": finish, "ids": sorted(ids)}

r = c.chat.completions.create(model=model, user="ann@example.com",
    messages=[{"role": "user", "content": "hi, it is ann"}])
out["by_user"] = r.choices[0].message.content

other = OpenAI(base_url=base, api_key=os.environ["OTHER_KEY"], max_retries=0)
r = other.chat.completions.create(model=model, extra_headers=header,
    messages=[{"role": "user", "content": "another tenant"}])
out["other_tenant"] = r.choices[0].message.content

try:
    c.chat.completions.create(model="gpt-4o", extra_headers=header, messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    out["wrong_model"] = [e.status_code, e.code, e.param]
try:
    c.chat.completions.create(model=model, extra_headers=header, n=2, messages=[{"role": "user", "content": "x"}])
except openai.BadRequestError as e:
    out["two_choices"] = [e.status_code, e.param]
try:
    OpenAI(base_url=base, api_key="not-a-key", max_retries=0).models.list()
except openai.AuthenticationError as e:
    out["bad_key"] = e.status_code
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn openais_python_client_completes_whole_and_streamed() -> anyhow::Result<()> {
    let venv = tokio::task::spawn_blocking(|| python::venv_with(&[OPENAI])).await??;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("openai");
    let llm = FakeLlm::start(&["--token-latency-ms", "5"]).await?;
    let w = Worker::start(
        WorkerSpec::new("w", &prefix, &bootstrap, &llm.url)?
            .env("MESHCHAT_PARTITIONS", "4")
            .env("MESHCHAT_AGENT", "support"),
    )
    .await?;
    let key = auth::api_key("acme", "boss", "admin");
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(SCRIPT)
        .env("BASE", &w.url)
        .env("MODEL", "support")
        .env("CONV", "orders")
        .env("KEY", &key)
        .env("OTHER_KEY", auth::api_key("globex", "gadmin", "admin"))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the openai client failed: {}\n{stdout}\nworker log {}",
        String::from_utf8_lossy(&out.stderr),
        w.log.display()
    );
    let got: Value = serde_json::from_str(stdout.trim())?;
    println!("{}", serde_json::to_string_pretty(&got)?);

    assert_eq!(got["models"], serde_json::json!(["support"]));
    let whole = got["whole"]["text"].as_str().unwrap_or_default();
    assert!(whole.starts_with(r#"Reply to "hello one" (turn 1,"#), "{whole}");
    assert_eq!(got["whole"]["finish"], "stop");
    // the same conversation goes on: the LLM saw the first turn
    let pieces: Vec<&str> = got["stream"]["pieces"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let streamed = pieces.concat();
    assert!(pieces.len() > 3, "streamed in pieces: {pieces:?}");
    assert!(
        streamed.starts_with(r#"Reply to "hello two" (turn 2,"#),
        "{streamed}"
    );
    assert_eq!(got["stream"]["finish"], "stop");
    assert_eq!(
        got["stream"]["ids"].as_array().map(Vec::len),
        Some(1),
        "one id per completion"
    );
    // a conversation per OpenAI user, and another tenant's "orders" is its own
    assert!(
        got["by_user"].as_str().is_some_and(|t| t.contains("(turn 1,")),
        "{}",
        got["by_user"]
    );
    assert!(
        got["other_tenant"]
            .as_str()
            .is_some_and(|t| t.contains("(turn 1,")),
        "{}",
        got["other_tenant"]
    );
    assert_eq!(
        got["wrong_model"],
        serde_json::json!([404, "model_not_found", "model"])
    );
    assert_eq!(got["two_choices"], serde_json::json!([400, "n"]));
    assert_eq!(got["bad_key"], 401);

    // what the MeshChat API shows: the streamed text is the stored reply
    let (status, view) = conversation_as(&w.url, &key, "orders").await?;
    assert_eq!(status, 200);
    let messages = view["messages"].as_array().cloned().unwrap_or_default();
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(texts.len(), 4, "two messages, two replies: {texts:?}");
    assert_eq!((texts[0], texts[2]), ("hello one", "hello two"));
    assert_eq!(texts[3], streamed);
    // the log: every message stored once, answered once (refused requests stored nothing)
    let log = wait_for("every reply in the log", Duration::from_secs(30), || async {
        let log = read_topic(&bootstrap, &format!("{prefix}chat.messages"))
            .await
            .ok()?;
        (Tally::of(&log).replies.len() >= 4).then_some(log)
    })
    .await?;
    let tally = Tally::of(&log);
    let ids: Vec<String> = tally.users.values().flatten().cloned().collect();
    assert_eq!(ids.len(), 4, "{:?}", tally.users);
    assert_eq!(tally.outcome(&ids), (4, 0, 0));
    Ok(())
}
