//! Size limits that turn a hostile stream into an error instead of memory growth.

/// Size limits of one [`crate::Parser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line accepted, in bytes, without its terminator. Default 1 MiB.
    pub max_line_bytes: usize,
    /// Largest event data accepted (data lines joined with LF, after UTF-8 replacement), in
    /// bytes. Default 4 MiB.
    pub max_event_bytes: usize,
}

impl Limits {
    /// Default [`Limits::max_line_bytes`]: 1 MiB.
    pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
    /// Default [`Limits::max_event_bytes`]: 4 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line_bytes: Limits::DEFAULT_MAX_LINE_BYTES,
            max_event_bytes: Limits::DEFAULT_MAX_EVENT_BYTES,
        }
    }
}
