//! Starting an implementation under test as a child process: `sluice worker` with a generated
//! config directory, or `sluice-bench baseline`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::{Impl, Mode, baseline::target_id};

/// What an implementation is asked to do.
#[derive(Debug, Clone)]
pub struct Job {
    /// The SSE endpoints; connection `i` reads `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// Concurrent connections (targets).
    pub connections: usize,
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic of the events.
    pub topic: String,
    /// Topic of Sluice's checkpoints.
    pub checkpoints: String,
    /// Stop after this many events (baselines only; Sluice runs until stopped).
    pub events: Option<u64>,
    /// Extra producer properties `key=value`.
    pub producer_properties: Vec<String>,
    /// The `sluice` binary.
    pub sluice_bin: Option<PathBuf>,
}

/// A running implementation.
pub struct Running {
    /// Which one.
    pub which: Impl,
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its stdout/stderr and (for Sluice) config.
    pub dir: PathBuf,
    /// Sluice's ops HTTP address.
    pub ops: Option<String>,
}

impl Running {
    /// Starts `which` for `job`, with its files under `dir`.
    pub async fn start(which: Impl, job: &Job, dir: &Path) -> anyhow::Result<Running> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("output.log"))
            .context("cannot create the implementation's log")?;
        let mut ops = None;
        let mut command = match which {
            Impl::Sluice => {
                let bin = job
                    .sluice_bin
                    .clone()
                    .context("no sluice binary for the sluice implementation")?;
                let listen = format!("127.0.0.1:{}", crate::free_port()?);
                let config = write_sluice_config(&dir.join("config"), job, &listen)?;
                validate(&bin, &config).await?;
                ops = Some(listen);
                let mut command = Command::new(bin);
                command.arg("worker").arg("--config").arg(config);
                command
            }
            Impl::Await | Impl::Inflight => {
                let mode = if which == Impl::Await {
                    Mode::Await
                } else {
                    Mode::Inflight
                };
                let exe = std::env::current_exe().context("cannot find the harness executable")?;
                let mut command = Command::new(exe);
                command
                    .arg("baseline")
                    .arg("--mode")
                    .arg(if mode == Mode::Await {
                        "await"
                    } else {
                        "inflight"
                    })
                    .arg("--brokers")
                    .arg(&job.brokers)
                    .arg("--topic")
                    .arg(&job.topic)
                    .arg("--connections")
                    .arg(job.connections.to_string());
                for url in &job.urls {
                    command.arg("--url").arg(url);
                }
                if let Some(events) = job.events {
                    command.arg("--events").arg(events.to_string());
                }
                for property in &job.producer_properties {
                    command.arg("--producer-property").arg(property);
                }
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", which.name()))?;
        let pid = child.id().context("child exited at once")?;
        Ok(Running {
            which,
            child,
            pid,
            dir: dir.to_owned(),
            ops,
        })
    }

    /// Fails when the process has exited (with the tail of its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.which.name(),
                self.dir.join("output.log").display(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("output.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(which = self.which.name(), "did not stop in time; killing");
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// Writes `worker.yaml` and one target file per connection under `dir`; returns the worker file.
pub fn write_sluice_config(dir: &Path, job: &Job, listen: &str) -> anyhow::Result<PathBuf> {
    let targets = dir.join("targets");
    std::fs::create_dir_all(&targets).context("cannot create the config dir")?;
    let mut worker = String::new();
    worker.push_str("# Generated by sluice-bench.\nkafka:\n  brokers:\n");
    for broker in job.brokers.split(',') {
        writeln!(worker, "    - {}", yaml_string(broker.trim()))?;
    }
    worker.push_str("  client_id: sluice-bench\n  properties:\n");
    for (key, value) in crate::producer_properties(&job.producer_properties)? {
        // Sluice owns acks and idempotence (and forces the same values).
        if key != "acks" && key != "enable.idempotence" {
            writeln!(worker, "    {}: {}", yaml_string(&key), yaml_string(&value))?;
        }
    }
    writeln!(
        worker,
        "topics:\n  events: {}\n  checkpoints: {}",
        yaml_string(&job.topic),
        yaml_string(&job.checkpoints)
    )?;
    writeln!(worker, "http:\n  listen: {}", yaml_string(listen))?;
    worker.push_str("targets_dir: targets\n");
    writeln!(
        worker,
        "defaults:\n  per_host_connections: {}",
        job.connections.max(1)
    )?;
    worker.push_str("shutdown:\n  grace: 5s\n");
    let worker_file = dir.join("worker.yaml");
    std::fs::write(&worker_file, worker).context("cannot write worker.yaml")?;
    if job.urls.is_empty() {
        bail!("no simulator url");
    }
    for index in 0..job.connections {
        let id = target_id(index, job.connections);
        let url = &job.urls[index % job.urls.len()];
        let target = format!("id: {id}\nurl: {}\nkey: target\n", yaml_string(url));
        std::fs::write(targets.join(format!("{id}.yaml")), target)
            .with_context(|| format!("cannot write target {id}"))?;
    }
    Ok(worker_file)
}

/// A YAML double-quoted string.
fn yaml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// `sluice validate --config FILE`, failing with its output.
async fn validate(bin: &Path, config: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("validate")
        .arg("--config")
        .arg(config)
        .output()
        .await
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "generated sluice config does not validate:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generated_config_names_every_target_and_the_shared_producer_settings() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job {
            urls: vec!["http://127.0.0.1:1/v1/stream?last_event_id=0".to_owned()],
            connections: 3,
            brokers: "127.0.0.1:9092,127.0.0.1:9093".to_owned(),
            topic: "events".to_owned(),
            checkpoints: "checkpoints".to_owned(),
            events: None,
            producer_properties: vec!["compression.type=lz4".to_owned()],
            sluice_bin: None,
        };
        let worker = write_sluice_config(dir.path(), &job, "127.0.0.1:2").unwrap();
        let text = std::fs::read_to_string(worker).unwrap();
        assert!(text.contains("\"linger.ms\": \"5\""), "{text}");
        assert!(text.contains("\"compression.type\": \"lz4\""), "{text}");
        assert!(!text.contains("acks"), "{text}");
        assert!(text.contains("per_host_connections: 3"), "{text}");
        let target = std::fs::read_to_string(dir.path().join("targets/t00002.yaml")).unwrap();
        assert!(target.contains("id: t00002"), "{target}");
        assert!(target.contains("last_event_id=0"), "{target}");
    }
}
