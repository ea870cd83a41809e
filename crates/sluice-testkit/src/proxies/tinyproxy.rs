//! `tinyproxy`, an HTTP proxy that tunnels with CONNECT.

use std::fmt::Write as _;
use std::process::Command;

use tempfile::TempDir;

use super::{ProxyAuth, ProxyError, or_skip, require, start_with_retries};
use crate::daemon::{Daemon, read_lossy};
use crate::port::free_port;

const PROGRAM: &str = "tinyproxy";

/// How to configure a [`Tinyproxy`].
#[derive(Debug, Clone, Default)]
pub struct TinyproxyOptions {
    /// Demand these credentials (`BasicAuth`); clients send `Proxy-Authorization: Basic …`.
    /// Tinyproxy's config syntax takes neither whitespace nor quotes in them.
    pub auth: Option<ProxyAuth>,
    /// Allow CONNECT only to this port; `None` allows CONNECT to every port.
    pub connect_port: Option<u16>,
}

/// A running `tinyproxy` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Tinyproxy {
    pub(super) daemon: Daemon,
    auth: Option<ProxyAuth>,
}

impl Tinyproxy {
    /// Starts tinyproxy in the foreground with its own config and waits until it accepts
    /// connections.
    pub fn start(opts: TinyproxyOptions) -> Result<Tinyproxy, ProxyError> {
        let program = require(PROGRAM, "tinyproxy")?;
        start_with_retries(|| {
            let dir =
                TempDir::with_prefix("sluice-tinyproxy-").map_err(|source| ProxyError::Io {
                    program: PROGRAM,
                    action: "create temp dir",
                    source,
                })?;
            let port = free_port().map_err(|source| ProxyError::Io {
                program: PROGRAM,
                action: "pick a free port",
                source,
            })?;
            let conf = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf, config(&opts, port, dir.path())).map_err(|source| {
                ProxyError::Io {
                    program: PROGRAM,
                    action: "write config",
                    source,
                }
            })?;
            let mut command = Command::new(&program);
            command.arg("-d").arg("-c").arg(&conf);
            Daemon::spawn(PROGRAM, command, dir, port).map(|daemon| Tinyproxy {
                daemon,
                auth: opts.auth.clone(),
            })
        })
    }

    /// Starts tinyproxy, or reports the test as skipped (failed under `SLUICE_TEST_STRICT=1`)
    /// when it is not installed and returns `None`.
    ///
    /// ```no_run
    /// # use sluice_testkit::{Tinyproxy, TinyproxyOptions};
    /// let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else { return };
    /// ```
    ///
    /// # Panics
    ///
    /// When tinyproxy is installed but does not start, or under strict mode when it is missing.
    #[track_caller]
    pub fn start_or_skip(opts: TinyproxyOptions) -> Option<Tinyproxy> {
        or_skip(Self::start(opts))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// `http://127.0.0.1:PORT`, or `http://user:pass@127.0.0.1:PORT` with credentials.
    pub fn url(&self) -> String {
        let userinfo = self
            .auth
            .as_ref()
            .map(ProxyAuth::userinfo)
            .unwrap_or_default();
        format!("http://{userinfo}127.0.0.1:{}", self.port())
    }

    /// The credentials it demands, if any.
    pub fn auth(&self) -> Option<&ProxyAuth> {
        self.auth.as_ref()
    }

    /// Its log so far (`LogLevel Info`: one `Request (file descriptor N): CONNECT host:port`
    /// line per tunnelled request, written before the client gets its response).
    pub fn log(&self) -> String {
        read_lossy(&self.daemon.dir().join("tinyproxy.log"))
    }
}

fn config(opts: &TinyproxyOptions, port: u16, dir: &std::path::Path) -> String {
    let mut conf = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(conf, "Port {port}");
    let _ = writeln!(conf, "Listen 127.0.0.1");
    let _ = writeln!(conf, "Timeout 600");
    let _ = writeln!(conf, "Allow 127.0.0.1");
    let _ = writeln!(conf, "LogLevel Info");
    let _ = writeln!(conf, "LogFile \"{}\"", dir.join("tinyproxy.log").display());
    let _ = writeln!(conf, "PidFile \"{}\"", dir.join("tinyproxy.pid").display());
    let _ = writeln!(conf, "DisableViaHeader Yes");
    let _ = writeln!(conf, "MaxClients 1000");
    if let Some(connect_port) = opts.connect_port {
        let _ = writeln!(conf, "ConnectPort {connect_port}");
    }
    if let Some(auth) = &opts.auth {
        let _ = writeln!(conf, "BasicAuth {} {}", auth.user, auth.password);
    }
    conf
}
