//! The OCI images `make images` builds (dist/images/worker.tar, operator.tar), unpacked as a
//! runtime would: their config (non-root numeric user, entrypoint, ports, OCI labels), their
//! libraries all present in the image, the entrypoints run in a chroot as the image's user —
//! and the worker image serving chat from a read-only root filesystem.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use meshchat_tests::auth::{api_keys_file, jwks_file, jwt};
use meshchat_tests::image::{OciImage, archive};
use meshchat_tests::{
    FakeLlm, Worker, WorkerSpec, broker, conversation_as, reply_to, send_as, unique_prefix, wait_for,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn unpack(name: &str) -> anyhow::Result<OciImage> {
    let dir = std::env::temp_dir()
        .join("meshchat-tests")
        .join("images")
        .join(name);
    OciImage::unpack(&archive(name)?, &dir)
}

/// Runs `args` in a chroot of `rootfs` as `user` (uid:gid); (status ok, stdout, stderr).
fn chroot(rootfs: &Path, user: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = std::process::Command::new("/usr/sbin/chroot")
        .arg(format!("--userspec={user}"))
        .arg(rootfs)
        .args(args)
        .env_clear()
        .output()
        .context("chroot (the image tests run as root)")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

fn check(image: &OciImage, binary: &str, ports: &[&str]) -> anyhow::Result<()> {
    // non-root, numeric (Pod Security `restricted` checks runAsNonRoot against a number)
    assert_eq!(image.user(), "10001:10001");
    assert_eq!(image.entrypoint(), [format!("/usr/local/bin/{binary}")]);
    let mut exposed = image.ports();
    exposed.sort();
    assert_eq!(exposed, ports);
    assert_eq!(image.label("org.opencontainers.image.version"), Some(VERSION));
    let revision = image
        .label("org.opencontainers.image.revision")
        .unwrap_or_default();
    assert!(
        revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "a commit: {revision}"
    );
    assert!(
        image
            .label("org.opencontainers.image.source")
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(
        image.label("org.opencontainers.image.licenses"),
        Some("Apache-2.0")
    );
    // named as the chart's default for it (what `kind load image-archive` tags it as)
    let short = binary.trim_start_matches("meshchat-");
    let reference = image.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default();
    assert!(reference.ends_with(&format!("/{short}:{VERSION}")), "{reference}");
    assert_eq!(image.layer_sizes.len(), 2, "the root filesystem, then the binary");
    // skopeo, which README.md has push them, reads the archive the same way
    let name = image.entrypoint().first().cloned().unwrap_or_default();
    let name = name.trim_start_matches("/usr/local/bin/meshchat-");
    let out = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", archive(name)?.display()))
        .output()
        .context("skopeo (make images installs it)")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(inspected["Labels"]["org.opencontainers.image.version"], VERSION);
    assert_eq!(inspected["Architecture"], "amd64");
    let total: u64 = image.layer_sizes.iter().sum();
    println!(
        "{binary}: {} layers, {} MB uncompressed",
        image.layer_sizes.len(),
        total / 1_048_576
    );

    // every library the binary needs is in the image (the image's own loader resolves them)
    let bin = format!("/usr/local/bin/{binary}");
    let (ok, libs, err) = chroot(
        &image.rootfs,
        "0:0",
        &["/lib64/ld-linux-x86-64.so.2", "--list", &bin],
    )?;
    assert!(ok && !libs.contains("not found"), "{libs}{err}");
    assert!(
        libs.contains("libssl.so.3") && libs.contains("libcurl.so.4"),
        "{libs}"
    );
    // no shell and no package manager: nothing to exec into but the entrypoint
    for absent in ["bin/sh", "usr/bin/apt", "usr/bin/dpkg", "usr/bin/perl"] {
        assert!(!image.rootfs.join(absent).exists(), "{absent} in the image");
    }
    let bundle = std::fs::read_to_string(image.rootfs.join("etc/ssl/certs/ca-certificates.crt"))?;
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 100,
        "the CA bundle Kafka TLS and the LLM's HTTPS verify against"
    );

    // the entrypoint runs as the image's user
    let (ok, out, err) = chroot(&image.rootfs, image.user(), &[&bin, "--version"])?;
    assert!(ok, "{err}");
    assert!(out.contains(VERSION), "{out}");
    let (ok, out, err) = chroot(&image.rootfs, image.user(), &[&bin, "--help"])?;
    assert!(ok && out.contains("Usage"), "{out}{err}");
    Ok(())
}

#[test]
fn the_operator_image_runs_its_entrypoint_as_a_numeric_non_root_user() -> anyhow::Result<()> {
    let image = unpack("operator")?;
    check(&image, "meshchat-operator", &["8080/tcp"])?;
    // the subcommand the chart runs
    let (ok, out, err) = chroot(
        &image.rootfs,
        image.user(),
        &["/usr/local/bin/meshchat-operator", "run", "--help"],
    )?;
    assert!(ok && out.contains("--lease-seconds"), "{out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_image_serves_chat_from_a_read_only_root() -> anyhow::Result<()> {
    let image = unpack("worker")?;
    check(&image, "meshchat-worker", &["8080/tcp", "9080/tcp"])?;
    // the preStop hook the operator renders
    let (ok, out, err) = chroot(
        &image.rootfs,
        image.user(),
        &["/usr/local/bin/meshchat-worker", "drain", "--help"],
    )?;
    assert!(ok && out.contains("Usage"), "{out}{err}");

    // the test's key and JWKS files, where the worker's environment says they are
    for file in [api_keys_file(), jwks_file()] {
        let inside = image.rootfs.join(file.strip_prefix("/")?);
        std::fs::create_dir_all(inside.parent().context("a directory")?)?;
        std::fs::copy(&file, &inside)?;
    }
    // the root filesystem bind-mounted read-only in a mount namespace of its own, then the
    // image's entrypoint as the image's user, as a kubelet with readOnlyRootFilesystem runs it
    let rootfs = image.rootfs.display().to_string();
    let script = format!(
        "mount --bind {rootfs} {rootfs} && mount -o remount,bind,ro {rootfs} {rootfs} \
         && exec chroot --userspec={} {rootfs} {}",
        image.user(),
        image.entrypoint().join(" ")
    );
    let bootstrap = broker().await?;
    let prefix = unique_prefix("image");
    let llm = FakeLlm::start(&["--token-latency-ms", "2"]).await?;
    let spec = WorkerSpec::new("image-0", &prefix, &bootstrap, &llm.url)?.launched_by(vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        script,
    ]);
    let worker = Worker::start(spec).await?;
    let token = jwt("acme", "alice", "user");
    let id = send_as(&worker.url, &token, "image-conv", "alice", "hello from the image").await?;
    let reply = wait_for("the reply, read back", Duration::from_secs(30), || async {
        let (status, conv) = conversation_as(&worker.url, &token, "image-conv").await.ok()?;
        (status == 200).then_some(())?;
        reply_to(&conv, &id).cloned()
    })
    .await?;
    assert!(reply["error"].is_null(), "{reply}");
    assert!(
        reply["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{reply}"
    );
    // and it wrote nothing to its root (it could not have: the write would have failed)
    let (ok, _, err) = chroot(
        &image.rootfs,
        "0:0",
        &["/usr/local/bin/meshchat-worker", "--version"],
    )?;
    assert!(ok, "{err}");
    let ro = std::fs::read_to_string("/proc/mounts")?;
    assert!(
        !ro.contains(&rootfs),
        "the read-only mount stayed in the worker's namespace"
    );
    drop(worker);
    Ok(())
}
