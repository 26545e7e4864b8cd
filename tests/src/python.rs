//! Python tools from PyPI (schemathesis, the official `openai` client), installed once into a
//! cached virtualenv, `~/.cache/meshchat/venv`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The virtualenv, with each of `packages` (`name==version`) installed at that version.
pub fn venv_with(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME")?;
    let venv = PathBuf::from(home).join(".cache/meshchat/venv");
    if !venv.join("bin/python").exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?
            .success();
        if !ok {
            bail!(
                "could not create a virtualenv at {} (python3-venv)",
                venv.display()
            );
        }
    }
    for spec in packages {
        let (name, version) = spec.split_once("==").context("packages are name==version")?;
        let shown = Command::new(venv.join("bin/pip")).args(["show", name]).output()?;
        let installed = String::from_utf8_lossy(&shown.stdout)
            .lines()
            .any(|l| l.trim() == format!("Version: {version}"));
        if installed {
            continue;
        }
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", spec])
            .status()?
            .success();
        if !ok {
            bail!("could not install {spec} from PyPI into {}", venv.display());
        }
    }
    Ok(venv)
}
