//! The Python implementation: the scraper a typical user writes (`python/scraper.py`, embedded
//! here), the virtualenv it runs in, and how it is started. The virtualenv is created with the
//! system's `python3` (or `SLUICE_BENCH_PYTHON`) under `~/.cache/sluice-bench/venv` (or
//! `SLUICE_BENCH_VENV`) and given the pinned packages from PyPI when they are missing, so the
//! comparison stays one command on a fresh machine. It must not change what the script does
//! to suit a measurement.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::impls::Job;

/// The script.
pub const SCRIPT: &str = include_str!("../python/scraper.py");

/// The packages the script imports, pinned (the versions BENCHMARKS.md was measured with).
pub const PACKAGES: [&str; 3] = [
    "confluent-kafka==2.16.2",
    "requests==2.34.2",
    "sseclient-py==1.9.0",
];

/// The virtualenv's directory.
fn venv_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_BENCH_VENV") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set (or set SLUICE_BENCH_VENV)")?;
    Ok(Path::new(&home).join(".cache/sluice-bench/venv"))
}

/// Runs `command`, failing with its output when it fails.
async fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The virtualenv's interpreter, with [`PACKAGES`] installed (created and filled when missing;
/// `pip` does nothing when they are there).
pub async fn interpreter() -> anyhow::Result<PathBuf> {
    let venv = venv_dir()?;
    let python = venv.join("bin/python");
    if !python.exists() {
        let system = std::env::var_os("SLUICE_BENCH_PYTHON").unwrap_or_else(|| "python3".into());
        if let Some(parent) = venv.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut command = Command::new(&system);
        command.arg("-m").arg("venv").arg(&venv);
        run(command, &format!("{} -m venv", system.to_string_lossy())).await?;
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PACKAGES);
    run(pip, "pip install of the Python scraper's packages").await?;
    Ok(python)
}

/// The command that runs the scraper for `job`, its script written under `dir`.
pub async fn command(job: &Job, dir: &Path) -> anyhow::Result<Command> {
    let python = interpreter().await?;
    let script = dir.join("scraper.py");
    std::fs::write(&script, SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let mut command = Command::new(python);
    // Unbuffered, so its log is current when the harness shows its tail.
    command
        .arg("-u")
        .arg(&script)
        .arg("--brokers")
        .arg(&job.brokers)
        .arg("--topic")
        .arg(&job.topic);
    for index in 0..job.connections {
        command
            .arg("--url")
            .arg(&job.urls[index % job.urls.len()])
            .arg("--target")
            .arg(crate::baseline::target_id(index, job.connections));
    }
    if let Some(events) = job.events {
        command.arg("--events").arg(events.to_string());
    }
    for property in &job.producer_properties {
        command.arg("--producer-property").arg(property);
    }
    Ok(command)
}
