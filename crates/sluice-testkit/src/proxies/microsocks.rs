//! `microsocks`, a SOCKS5 proxy with optional user/password authentication.

use std::process::Command;

use tempfile::TempDir;

use super::{ProxyAuth, ProxyError, or_skip, require, start_with_retries};
use crate::daemon::Daemon;
use crate::port::free_port;

const PROGRAM: &str = "microsocks";

/// How to configure a [`Microsocks`].
#[derive(Debug, Clone, Default)]
pub struct MicrosocksOptions {
    /// Demand these credentials (SOCKS5 username/password, RFC 1929); `None` allows anyone.
    pub auth: Option<ProxyAuth>,
}

/// A running `microsocks` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Microsocks {
    daemon: Daemon,
    auth: Option<ProxyAuth>,
}

impl Microsocks {
    /// Starts microsocks and waits until it accepts connections.
    pub fn start(opts: MicrosocksOptions) -> Result<Microsocks, ProxyError> {
        let program = require(PROGRAM, "microsocks")?;
        start_with_retries(|| {
            let dir =
                TempDir::with_prefix("sluice-microsocks-").map_err(|source| ProxyError::Io {
                    program: PROGRAM,
                    action: "create temp dir",
                    source,
                })?;
            let port = free_port().map_err(|source| ProxyError::Io {
                program: PROGRAM,
                action: "pick a free port",
                source,
            })?;
            let mut command = Command::new(&program);
            command
                .arg("-i")
                .arg("127.0.0.1")
                .arg("-p")
                .arg(port.to_string());
            if let Some(auth) = &opts.auth {
                command
                    .arg("-u")
                    .arg(&auth.user)
                    .arg("-P")
                    .arg(&auth.password);
            }
            Daemon::spawn(PROGRAM, command, dir, port).map(|daemon| Microsocks {
                daemon,
                auth: opts.auth.clone(),
            })
        })
    }

    /// Starts microsocks, or reports the test as skipped (failed under `SLUICE_TEST_STRICT=1`)
    /// when it is not installed and returns `None`.
    ///
    /// ```no_run
    /// # use sluice_testkit::{Microsocks, MicrosocksOptions};
    /// let Some(proxy) = Microsocks::start_or_skip(MicrosocksOptions::default()) else { return };
    /// ```
    ///
    /// # Panics
    ///
    /// When microsocks is installed but does not start, or under strict mode when it is missing.
    #[track_caller]
    pub fn start_or_skip(opts: MicrosocksOptions) -> Option<Microsocks> {
        or_skip(Self::start(opts))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// `socks5h://user:pass@127.0.0.1:PORT` (or without credentials): the `h` scheme has the
    /// proxy resolve host names, as a user behind such a proxy would need; reqwest accepts it,
    /// and [`Microsocks::url_socks5`] gives the locally-resolving form.
    pub fn url(&self) -> String {
        self.url_with_scheme("socks5h")
    }

    /// `socks5://user:pass@127.0.0.1:PORT`: the client resolves host names itself.
    pub fn url_socks5(&self) -> String {
        self.url_with_scheme("socks5")
    }

    fn url_with_scheme(&self, scheme: &str) -> String {
        let userinfo = self
            .auth
            .as_ref()
            .map(ProxyAuth::userinfo)
            .unwrap_or_default();
        format!("{scheme}://{userinfo}127.0.0.1:{}", self.port())
    }

    /// The credentials it demands, if any.
    pub fn auth(&self) -> Option<&ProxyAuth> {
        self.auth.as_ref()
    }

    /// What it logged so far: one `client[N] 127.0.0.1: connected to HOST:PORT` line per
    /// tunnel, written before it answers the client's CONNECT.
    pub fn log(&self) -> String {
        self.daemon.output()
    }
}
