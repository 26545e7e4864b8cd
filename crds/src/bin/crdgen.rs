//! Writes the ChatAgent CRD YAML to the paths given (or prints it).
#![forbid(unsafe_code)]

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let yaml = meshchat_crds::crd_yaml().context("rendering the ChatAgent CRD")?;
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        print!("{yaml}");
    }
    for path in paths {
        std::fs::write(&path, &yaml).with_context(|| format!("writing {path}"))?;
        eprintln!("crdgen: wrote {path}");
    }
    Ok(())
}
