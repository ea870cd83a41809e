//! Real proxy servers for tests: `tinyproxy` (HTTP CONNECT) and `microsocks` (SOCKS5).
//!
//! Each runs as its own process on a free 127.0.0.1 port with its config and logs in a private
//! temp dir, is ready when `start` returns (its port accepts connections) and is killed, reaped
//! and cleaned up when the handle drops.

mod microsocks;
mod tinyproxy;

#[cfg(test)]
mod tests;

use std::fmt;

pub use microsocks::{Microsocks, MicrosocksOptions};
pub use tinyproxy::{Tinyproxy, TinyproxyOptions};

use crate::skip::{current_test_name, find_program, skip_or_fail};

/// How often a start is retried when the program exits at once (its port was taken between
/// choosing it and binding it).
const START_ATTEMPTS: u32 = 3;

/// User name and password a proxy demands; `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl ProxyAuth {
    /// Credentials from a user name and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// `user:password@` with both parts percent-encoded for a URL's userinfo.
    fn userinfo(&self) -> String {
        format!(
            "{}:{}@",
            percent_encode(&self.user),
            percent_encode(&self.password)
        )
    }
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a proxy could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The program is not installed.
    #[error("{program} is not installed (apt-get install {package})")]
    NotInstalled {
        /// The executable's name.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// An I/O step of starting the program failed.
    #[error("{program}: {action} failed: {source}")]
    Io {
        /// The executable's name.
        program: &'static str,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The program exited before it accepted connections.
    #[error("{program} exited before it was ready ({status}); output: {output}")]
    ExitedEarly {
        /// The executable's name.
        program: &'static str,
        /// Its exit status.
        status: String,
        /// What it wrote to stdout, stderr and its log.
        output: String,
    },
    /// The program kept running but never accepted connections.
    #[error("{program} did not accept connections on port {port}; output: {output}")]
    NotReady {
        /// The executable's name.
        program: &'static str,
        /// The port it should listen on.
        port: u16,
        /// What it wrote to stdout, stderr and its log.
        output: String,
    },
}

impl ProxyError {
    /// A bounded label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NotInstalled { .. } => "not_installed",
            ProxyError::Io { .. } => "io",
            ProxyError::ExitedEarly { .. } => "exited_early",
            ProxyError::NotReady { .. } => "not_ready",
        }
    }
}

/// Finds `program`, or says which package provides it.
fn require(program: &'static str, package: &'static str) -> Result<std::path::PathBuf, ProxyError> {
    find_program(program).ok_or(ProxyError::NotInstalled { program, package })
}

/// Runs `start` until it succeeds, retrying only when the program exited at once.
fn start_with_retries<T>(
    mut start: impl FnMut() -> Result<T, ProxyError>,
) -> Result<T, ProxyError> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(ProxyError::ExitedEarly { .. }) if attempt < START_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

/// Turns a start result into the skip policy: a missing program skips (or fails under
/// `SLUICE_TEST_STRICT=1`); any other failure fails the test.
#[track_caller]
fn or_skip<T>(started: Result<T, ProxyError>) -> Option<T> {
    match started {
        Ok(proxy) => Some(proxy),
        Err(e @ ProxyError::NotInstalled { .. }) => {
            skip_or_fail(&current_test_name(), &e.to_string());
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Everything but RFC 3986 unreserved characters is percent-encoded in a URL's userinfo.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}
