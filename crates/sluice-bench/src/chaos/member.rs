//! One Sluice process of a chaos run (a worker or the aggregator): started, killed with SIGKILL
//! and restarted at once on the same config and port, paused (SIGSTOP) and resumed (SIGCONT),
//! sent SIGTERM and restarted once it has exited (a rolling restart), each life with its own
//! log file, and watched for exits nobody asked for. It must not judge the process's output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use crate::child::ChildProc;

/// The log filter every process runs with: Sluice at debug (the most it could leak), the
/// client libraries at info.
const LOG_FILTER: &str =
    "debug,rdkafka=info,librdkafka=info,h2=info,hyper=info,hyper_util=info,reqwest=info";

/// How long a SIGTERMed process may take to exit before it is killed (its `shutdown.grace` is
/// 10 s; this leaves it room to exit 1 on its own).
const TERM_GRACE: Duration = Duration::from_secs(20);

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
    /// SIGSTOPs sent.
    pub pauses: u32,
    /// Whether this life is stopped now (a SIGCONT is owed).
    paused: bool,
    /// When this life was sent SIGTERM (its exit is expected, and restarts it).
    terminated: Option<tokio::time::Instant>,
    /// SIGTERMs sent (rolling restarts of this member).
    pub terminations: u32,
    /// Exits after a SIGTERM that were not a clean `exit 0`, with the status.
    pub unclean_stops: Vec<String>,
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
            pauses: 0,
            paused: false,
            terminated: None,
            terminations: 0,
            unclean_stops: Vec::new(),
        }
    }

    /// Starts a new life.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.lives += 1;
        self.paused = false;
        self.terminated = None;
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

    /// SIGKILL, without a new life.
    pub async fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill().await;
            self.kills += 1;
        }
    }

    /// SIGSTOP: the process freezes (no heartbeats, no reads) until [`Member::resume`].
    pub async fn pause(&mut self) -> anyhow::Result<()> {
        let Some(process) = self.process.as_ref() else {
            return Ok(());
        };
        if self.paused || self.terminated.is_some() {
            return Ok(());
        }
        process.signal("STOP").await?;
        self.paused = true;
        self.pauses += 1;
        Ok(())
    }

    /// SIGCONT, when this life is paused (a life killed or restarted since is not).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if !self.paused {
            return Ok(());
        }
        self.paused = false;
        match self.process.as_ref() {
            Some(process) => process.signal("CONT").await,
            None => Ok(()),
        }
    }

    /// Whether this life is paused now.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGCONT (a frozen process would not act on it) and SIGTERM; [`Member::watch`] restarts
    /// it once it has exited, and SIGKILLs it when it is still there `grace` later.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        self.watch();
        let Some(process) = self.process.as_ref() else {
            return Ok(());
        };
        if self.terminated.is_some() {
            return Ok(());
        }
        process.signal("CONT").await?;
        self.paused = false;
        process.signal("TERM").await?;
        self.terminated = Some(tokio::time::Instant::now());
        self.terminations += 1;
        Ok(())
    }

    /// Whether a SIGTERM is still waiting for this life's exit.
    pub fn terminating(&self) -> bool {
        self.terminated.is_some()
    }

    /// Notes (and restarts) a process that exited on its own, or after [`Member::terminate`].
    pub fn watch(&mut self) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        if let Some(at) = self.terminated {
            match process.exited() {
                Some(status) => {
                    if !status.success() {
                        self.unclean_stops.push(format!(
                            "{} life {} exited {status} after SIGTERM (shutdown.grace passed?)",
                            self.name, self.lives
                        ));
                    }
                }
                None if at.elapsed() > TERM_GRACE => {
                    self.unclean_stops.push(format!(
                        "{} life {} still running {TERM_GRACE:?} after SIGTERM; killed",
                        self.name, self.lives
                    ));
                    if let Some(process) = self.process.take() {
                        // SIGKILL does not wait; reap it off the loop.
                        tokio::spawn(process.kill());
                    }
                }
                None => return,
            }
            self.process = None;
            if let Err(error) = self.start() {
                self.unexpected_exits
                    .push(format!("{}: restart failed: {error:#}", self.name));
            }
            return;
        }
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
