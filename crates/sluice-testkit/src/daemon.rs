//! A helper program run by a test: spawned with its output in a temp dir, ready once its
//! loopback port accepts connections, killed and reaped on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::port::{accepts_connections, loopback};
use crate::proxies::ProxyError;

/// How many times readiness is probed before giving up (with [`PROBE_INTERVAL`] between).
const READY_ATTEMPTS: u32 = 250;
/// Pause between readiness probes; at most `READY_ATTEMPTS * PROBE_INTERVAL` (~5 s) in total.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// A running helper program that is killed, reaped and cleaned up on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    program: &'static str,
    child: Child,
    port: u16,
    output: PathBuf,
    // Dropped after `child` is killed in `Drop`, so the program never sees its dir vanish.
    dir: TempDir,
}

impl Daemon {
    /// Spawns `command` (stdout and stderr go to `output.log` in `dir`) and waits until
    /// 127.0.0.1:`port` accepts connections.
    pub(crate) fn spawn(
        program: &'static str,
        command: Command,
        dir: TempDir,
        port: u16,
    ) -> Result<Self, ProxyError> {
        Self::spawn_within(program, command, dir, port, READY_ATTEMPTS)
    }

    /// [`Daemon::spawn`] for a program slower to start: readiness is probed `attempts` times.
    pub(crate) fn spawn_within(
        program: &'static str,
        mut command: Command,
        dir: TempDir,
        port: u16,
        attempts: u32,
    ) -> Result<Self, ProxyError> {
        let output = dir.path().join("output.log");
        let out = File::create(&output).map_err(|source| ProxyError::Io {
            program,
            action: "create output file",
            source,
        })?;
        let err = out.try_clone().map_err(|source| ProxyError::Io {
            program,
            action: "create output file",
            source,
        })?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command.spawn().map_err(|source| ProxyError::Io {
            program,
            action: "spawn",
            source,
        })?;
        let mut daemon = Daemon {
            program,
            child,
            port,
            output,
            dir,
        };
        daemon.wait_until_ready(attempts)?;
        tracing::debug!(program, port, "test helper program ready");
        Ok(daemon)
    }

    fn wait_until_ready(&mut self, attempts: u32) -> Result<(), ProxyError> {
        let addr = loopback(self.port);
        for _ in 0..attempts {
            if let Some(status) = self.child.try_wait().map_err(|source| ProxyError::Io {
                program: self.program,
                action: "wait",
                source,
            })? {
                return Err(ProxyError::ExitedEarly {
                    program: self.program,
                    status: status.to_string(),
                    output: self.output(),
                });
            }
            if accepts_connections(addr) {
                return Ok(());
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
        Err(ProxyError::NotReady {
            program: self.program,
            port: self.port,
            output: self.output(),
        })
    }

    /// The loopback port the program listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The program's private temp dir (config, logs).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the program wrote to stdout and stderr so far.
    pub(crate) fn output(&self) -> String {
        read_lossy(&self.output)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Errors mean the program already exited; either way it is gone once `wait` returns.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a file as text, replacing invalid UTF-8; a missing file reads as empty.
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
