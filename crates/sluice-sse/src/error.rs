//! Errors of the parser: a hostile or broken stream, never an I/O failure.

/// Why a stream could not be parsed. After an error the parser is done with that connection
/// (see [`crate::Parser::next_item`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line (without its terminator) is longer than `limit` bytes.
    #[error("sse line longer than {limit} bytes")]
    LineTooLong {
        /// The configured [`crate::Limits::max_line_bytes`].
        limit: usize,
    },
    /// The data of one event (data lines joined with LF) is larger than `limit` bytes.
    #[error("sse event data larger than {limit} bytes")]
    EventTooLarge {
        /// The configured [`crate::Limits::max_event_bytes`].
        limit: usize,
    },
}

impl ParseError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::LineTooLong { .. } => "line_too_long",
            ParseError::EventTooLarge { .. } => "event_too_large",
        }
    }

    /// Whether a new connection may help. A reconnect resumes after the last good event, so the
    /// upstream may have moved on; it may also send the same oversized event again, so callers
    /// should back off.
    pub fn is_retryable(&self) -> bool {
        true
    }
}
