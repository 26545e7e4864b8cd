//! The public API against its OpenAPI document: schemathesis (from PyPI, installed into
//! `~/.cache/meshchat/venv` when missing) drives a running worker with a valid token — a bounded
//! number of examples per operation — and every response must be documented, match its schema,
//! and never be a 5xx. The live streams (SSE, WebSocket) are left out: a stream that never
//! ends is not a response schemathesis can read; `limits.rs` and `identity.rs` cover them.

use std::path::PathBuf;

use anyhow::bail;
use meshchat_tests::*;

/// schemathesis, installed once into the cached virtualenv.
fn schemathesis() -> anyhow::Result<PathBuf> {
    Ok(python::venv_with(&["schemathesis==4.32.5"])?.join("bin/schemathesis"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_matches_the_openapi_document() -> anyhow::Result<()> {
    let st = tokio::task::spawn_blocking(schemathesis).await??;
    let bootstrap = broker().await?;
    let prefix = unique_prefix("openapi");
    let llm = FakeLlm::start(&[]).await?;
    let w =
        Worker::start(WorkerSpec::new("w", &prefix, &bootstrap, &llm.url)?.env("MESHCHAT_PARTITIONS", "4"))
            .await?;
    // the served document is the checked-in one
    let served = http().get(format!("{}/api/openapi.json", w.url)).send().await?;
    assert_eq!(served.status(), 200, "public, no credential");
    let served: serde_json::Value = served.json().await?;
    let checked_in: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
    )?)?;
    assert_eq!(served, checked_in);
    // the documents' example conversation exists, so reads reach more than the 404 path
    let id = send(&w.url, "conv-123", "fuzz", "Hello, how are you?").await?;
    wait_reply(&w.url, "conv-123", &id, std::time::Duration::from_secs(30)).await?;

    let report = std::env::temp_dir().join(format!("meshchat-schemathesis-{}", std::process::id()));
    // schemathesis keeps a cache in its working directory: give it the report's
    std::fs::create_dir_all(&report)?;
    let out = tokio::process::Command::new(st)
        .current_dir(&report)
        .arg("run")
        .arg(format!("{}/api/openapi.json", w.url))
        .args(["--url", &w.url])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", auth::admin("fuzz")),
        ])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--exclude-path-regex", "/events$|/ws$"])
        .args(["--max-examples", "25", "--seed", "14", "--request-timeout", "20"])
        .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
        .args(["--generation-database", "none", "--workers", "1"])
        .arg("--report-dir")
        .arg(&report)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    if !out.status.success() {
        bail!(
            "schemathesis found responses the document does not allow (worker log {}):\n{}",
            w.log.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
