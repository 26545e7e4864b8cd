//! The OCI archives `make images` writes (`dist/images/*.tar`), read as a container runtime
//! would: index, manifest, config, layers unpacked in order into a root filesystem.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// One unpacked image.
pub struct OciImage {
    /// Its config (`config` holds User, Entrypoint, ExposedPorts, Labels...).
    pub config: Value,
    /// Its manifest.
    pub manifest: Value,
    /// Its index (the archive's `index.json`).
    pub index: Value,
    /// The layers' uncompressed sizes, in order.
    pub layer_sizes: Vec<u64>,
    /// The root filesystem, unpacked.
    pub rootfs: PathBuf,
}

/// `dist/images/<name>.tar` of the repository.
pub fn archive(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new("..").join("dist/images").join(format!("{name}.tar"));
    if !path.exists() {
        bail!(
            "{} is missing: `make images` builds it (make test does)",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

impl OciImage {
    /// Unpacks the archive at `path` under `dir` (emptied first).
    pub fn unpack(path: &Path, dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        let (layout, rootfs) = (dir.join("layout"), dir.join("rootfs"));
        std::fs::create_dir_all(&layout)?;
        std::fs::create_dir_all(&rootfs)?;
        tar(path, &layout)?;
        let read = |p: PathBuf| -> anyhow::Result<Value> {
            Ok(serde_json::from_slice(
                &std::fs::read(&p).with_context(|| p.display().to_string())?,
            )?)
        };
        let blob = |digest: &Value| -> anyhow::Result<PathBuf> {
            let d = digest.as_str().context("a digest")?;
            let hex = d.strip_prefix("sha256:").context("sha256 digests")?;
            Ok(layout.join("blobs/sha256").join(hex))
        };
        let index = read(layout.join("index.json"))?;
        let manifest = read(blob(&index["manifests"][0]["digest"])?)?;
        let config = read(blob(&manifest["config"]["digest"])?)?;
        let mut layer_sizes = Vec::new();
        for layer in manifest["layers"].as_array().context("layers")? {
            let media = layer["mediaType"].as_str().unwrap_or_default();
            if media != "application/vnd.oci.image.layer.v1.tar" {
                bail!("layer of type {media}: the archives are uncompressed");
            }
            let path = blob(&layer["digest"])?;
            layer_sizes.push(std::fs::metadata(&path)?.len());
            tar(&path, &rootfs)?;
        }
        Ok(Self {
            config,
            manifest,
            index,
            layer_sizes,
            rootfs,
        })
    }

    /// The user the image runs as (`uid:gid`).
    pub fn user(&self) -> &str {
        self.config["config"]["User"].as_str().unwrap_or_default()
    }

    /// The entrypoint.
    pub fn entrypoint(&self) -> Vec<String> {
        strings(&self.config["config"]["Entrypoint"])
    }

    /// Exposed ports (`8080/tcp`...).
    pub fn ports(&self) -> Vec<String> {
        self.config["config"]["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.config["config"]["Labels"][key].as_str()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn tar(archive: &Path, into: &Path) -> anyhow::Result<()> {
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .arg("--no-same-owner")
        .output()?;
    if !out.status.success() {
        bail!(
            "tar -xf {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
