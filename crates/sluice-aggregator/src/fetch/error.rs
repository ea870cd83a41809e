//! Why a base-state fetch failed, as one typed error with a bounded `kind()`: the client could
//! not be built, the fetch (or one page of it) failed, or the merger refused the document.
//! Classification only.

use sluice_client::{FetchError, LinkError};
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
    /// A paginated base state could not be fetched whole.
    #[error(transparent)]
    Pages(#[from] PagesError),
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
            BaseFetchError::Pages(error) => error.kind(),
            BaseFetchError::Load(error) => error.kind(),
        }
    }
}

/// Why the pages of a paginated base state (`aggregate.base.pagination`) were not all fetched.
/// The target gets no part of them.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// More pages than `max_pages`.
    #[error(
        "target {target}: the base state has more than {limit} pages \
         (aggregate.base.pagination.max_pages)"
    )]
    TooManyPages {
        /// The target.
        target: String,
        /// The limit.
        limit: usize,
    },
    /// More bytes, all pages together, than `max_bytes`.
    #[error(
        "target {target}: the base state's pages are larger than {limit} bytes together \
         (aggregate.base.pagination.max_bytes)"
    )]
    TooManyBytes {
        /// The target.
        target: String,
        /// The limit.
        limit: usize,
    },
    /// A next-page link or cursor leads back to a page already fetched.
    #[error(
        "target {target}: page {page} of the base state is one already fetched (a pagination loop)"
    )]
    Loop {
        /// The target.
        target: String,
        /// The page that would have been fetched again (1 is the first).
        page: usize,
    },
    /// A next-page link that cannot be followed.
    #[error("target {target}: page {page} of the base state links to the next page: {source}")]
    Link {
        /// The target.
        target: String,
        /// The page with the link.
        page: usize,
        /// What is wrong with it.
        source: LinkError,
    },
    /// A page does not say where the next one is in a form that can be used.
    #[error("target {target}: page {page} of the base state {what}")]
    Page {
        /// The target.
        target: String,
        /// The page.
        page: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A page could not be fetched.
    #[error("page {page} of the base state: {source}")]
    Fetch {
        /// The page (1 is the first).
        page: usize,
        /// Why.
        source: FetchError,
    },
}

impl PagesError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PagesError::TooManyPages { .. } => "too_many_pages",
            PagesError::TooManyBytes { .. } => "too_many_bytes",
            PagesError::Loop { .. } => "page_loop",
            PagesError::Link { .. } => "page_link",
            PagesError::Page { .. } => "page_next",
            PagesError::Fetch { source, .. } => source.kind(),
        }
    }
}
