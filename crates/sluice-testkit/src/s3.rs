//! An S3-compatible server on loopback for delivery tests: moto's server (`moto_server`, from
//! PyPI, pinned, in a virtualenv `python` fills), in memory, accepting any credentials. It is
//! killed on drop and keeps nothing. Buckets are created and objects read with plain HTTP
//! requests (moto needs no signature), so a test checks what a client of the bucket sees
//! without going through the code under test.

use std::process::Command;

use crate::daemon::Daemon;
use crate::port::free_port;

/// The moto release the deliveries were tested against.
pub const MOTO: &str = "moto[server]==5.2.6";

/// A running `moto_server`.
#[derive(Debug)]
pub struct S3Server {
    daemon: Daemon,
}

impl S3Server {
    /// Installs moto when missing (blocking: call it from `spawn_blocking` in async tests) and
    /// starts it on a free loopback port.
    pub fn start() -> Result<S3Server, String> {
        let python = crate::python::venv("moto", &[MOTO])?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let mut command = Command::new(python.with_file_name("moto_server"));
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        // Python imports moto's every service at start: give it up to 60 s on a loaded machine.
        let daemon = Daemon::spawn_within("moto_server", command, dir, port, 3_000)
            .map_err(|e| e.to_string())?;
        Ok(S3Server { daemon })
    }

    /// `http://127.0.0.1:PORT`, the endpoint for S3 clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port())
    }

    /// Everything the server wrote so far (its request log).
    pub fn output(&self) -> String {
        self.daemon.output()
    }
}
