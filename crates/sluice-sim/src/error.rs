//! Errors of the simulator's library API.

/// Why the simulator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid; the message lists every problem.
    #[error("invalid simulator config: {0}")]
    InvalidConfig(String),
    /// The listener or the socket layer failed.
    #[error("simulator io error")]
    Io(#[from] std::io::Error),
    /// The server task panicked or was aborted.
    #[error("simulator task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl SimError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SimError::InvalidConfig(_) => "invalid_config",
            SimError::Io(_) => "io",
            SimError::Task(_) => "task",
        }
    }

    /// Whether trying again (for example on another port) can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SimError::Io(_))
    }
}
