//! One Sluice process of a chaos run (a worker or the aggregator): started, killed with SIGKILL
//! and restarted at once on the same config and port, each life with its own log file, and
//! watched for exits nobody asked for. It must not judge the process's output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use crate::child::ChildProc;

/// The log filter every process runs with: Sluice at debug (the most it could leak), the
/// client libraries at info.
const LOG_FILTER: &str =
    "debug,rdkafka=info,librdkafka=info,h2=info,hyper=info,hyper_util=info,reqwest=info";

/// A restartable `sluice <role>` process.
pub struct Member {
    /// `worker-0`, `aggregator`.
    pub name: String,
    role: &'static str,
    bin: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    /// `http://127.0.0.1:PORT` of its HTTP server.
    pub base: String,
    process: Option<ChildProc>,
    lives: u32,
    /// SIGKILLs sent.
    pub kills: u32,
    /// Exits nobody asked for, with the status and the log file.
    pub unexpected_exits: Vec<String>,
}

impl Member {
    /// A member not yet started.
    pub fn new(
        name: String,
        role: &'static str,
        bin: &Path,
        config: &Path,
        logs: &Path,
        listen: &str,
    ) -> Member {
        Member {
            name,
            role,
            bin: bin.to_owned(),
            config: config.to_owned(),
            logs: logs.to_owned(),
            base: format!("http://{listen}"),
            process: None,
            lives: 0,
            kills: 0,
            unexpected_exits: Vec::new(),
        }
    }

    /// Starts a new life.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.lives += 1;
        let log = self
            .logs
            .join(format!("{}-{:03}.log", self.name, self.lives));
        let mut command = Command::new(&self.bin);
        command
            .arg("--log")
            .arg(LOG_FILTER)
            .arg(self.role)
            .arg("--config")
            .arg(&self.config);
        self.process = Some(
            ChildProc::spawn(&self.name, command, &log)
                .with_context(|| format!("cannot start {}", self.name))?,
        );
        Ok(())
    }

    /// SIGKILL, then a new life at once.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.watch();
        if let Some(process) = self.process.take() {
            process.kill().await;
            self.kills += 1;
        }
        self.start()
    }

    /// Notes (and restarts) a process that exited on its own.
    pub fn watch(&mut self) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        if let Some(status) = process.exited() {
            let tail = process.log_tail(5);
            self.unexpected_exits.push(format!(
                "{} life {} exited on its own ({status}); last lines:\n{tail}",
                self.name, self.lives
            ));
            self.process = None;
            if let Err(error) = self.start() {
                self.unexpected_exits
                    .push(format!("{}: restart failed: {error:#}", self.name));
            }
        }
    }

    /// SIGTERM, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(process) = self.process.take() {
            process.stop(grace).await;
        }
    }

    /// Lives so far (restarts + 1).
    pub fn lives(&self) -> u32 {
        self.lives
    }
}
