//! A child process of the harness: started with its stdout and stderr in a log file, checked
//! for life, signalled, stopped with SIGTERM (then SIGKILL after a grace period), and killed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running child process.
pub struct ChildProc {
    name: String,
    child: Child,
    /// Its process id.
    pub pid: u32,
    log: PathBuf,
}

impl ChildProc {
    /// Starts `command` (stdin closed, stdout and stderr to `log`), called `name` in messages.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<ChildProc> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create the log of {name}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().context("child exited at once")?;
        Ok(ChildProc {
            name: name.to_owned(),
            child,
            pid,
            log: log.to_owned(),
        })
    }

    /// Fails when the process has exited (with the tail of its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` (a name such as `STOP`, `CONT`, `TERM`) with `kill(1)`.
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .await
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{signal} {} failed ({status})", self.pid);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        // A stopped process would not act on SIGTERM.
        let _ = self.signal("CONT").await;
        let _ = self.signal("TERM").await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(name = %self.name, "did not stop in time; killing");
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

impl ChildProc {
    /// SIGKILL (no chance to flush or checkpoint), then reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Its exit status, when it has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}
