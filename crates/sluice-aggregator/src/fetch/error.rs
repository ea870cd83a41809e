//! Why a base-state fetch failed, as one typed error with a bounded `kind()`: the client could
//! not be built, the fetch failed, or the merger refused the document. Classification only.

use sluice_client::FetchError;
use sluice_merge::BaseError;

use super::client::BaseClientError;

/// Why a base state could not be fetched or loaded.
#[derive(Debug, thiserror::Error)]
pub enum BaseFetchError {
    /// The request could not be prepared (headers, proxy, client options).
    #[error(transparent)]
    Client(#[from] BaseClientError),
    /// The REST endpoint did not deliver a document.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The merger refused the document.
    #[error(transparent)]
    Load(#[from] BaseError),
}

impl BaseFetchError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BaseFetchError::Client(error) => error.kind(),
            BaseFetchError::Fetch(error) => error.kind(),
            BaseFetchError::Load(error) => error.kind(),
        }
    }
}
