//! Why a stream ended: the closed set of reconnect reasons shared by `tail` and the worker.

use std::fmt;

/// Why a streaming connection ended. Every reconnect is labelled with exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// No byte arrived within the idle timeout although the socket looked open.
    SilentDrop,
    /// The server closed the response cleanly.
    Eof,
    /// The connection failed: reset by the peer, refused, or another transport error.
    Reset,
    /// A planned reconnect ahead of a proxy's known maximum connection age.
    ProxyTtl,
    /// The server answered with a status that is not a streaming 200.
    HttpStatus,
    /// The stream broke the protocol: wrong content type or an event over the size limits.
    Protocol,
    /// A deliberate rotation to another proxy or connection.
    Rotate,
    /// No attempt could be made: a secret the request needs (a header, a token, a proxy
    /// password) cannot be read.
    MissingSecret,
}

impl DisconnectReason {
    /// Every reason, in a stable order (for pre-registering metric label values).
    pub const ALL: [DisconnectReason; 8] = [
        DisconnectReason::SilentDrop,
        DisconnectReason::Eof,
        DisconnectReason::Reset,
        DisconnectReason::ProxyTtl,
        DisconnectReason::HttpStatus,
        DisconnectReason::Protocol,
        DisconnectReason::Rotate,
        DisconnectReason::MissingSecret,
    ];

    /// The bounded label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::SilentDrop => "silent_drop",
            DisconnectReason::Eof => "eof",
            DisconnectReason::Reset => "reset",
            DisconnectReason::ProxyTtl => "proxy_ttl",
            DisconnectReason::HttpStatus => "http_status",
            DisconnectReason::Protocol => "protocol",
            DisconnectReason::Rotate => "rotate",
            DisconnectReason::MissingSecret => "missing_secret",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
