//! The Python implementation: the scraper a typical user writes (`python/scraper.py`, embedded
//! here), the virtualenv it runs in, and how it is started. The virtualenv (`venv-bench`, see
//! `sluice_testkit::python`) is created with the system's `python3` and given the pinned
//! packages from PyPI when they are missing, so the comparison stays one command on a fresh
//! machine. It must not change what the script does to suit a measurement.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
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

/// The virtualenv's interpreter, with [`PACKAGES`] installed (created and filled when missing).
pub async fn interpreter() -> anyhow::Result<PathBuf> {
    tokio::task::spawn_blocking(|| sluice_testkit::python::venv("bench", &PACKAGES))
        .await
        .context("the virtualenv task failed")?
        .map_err(|error| anyhow::anyhow!(error))
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
