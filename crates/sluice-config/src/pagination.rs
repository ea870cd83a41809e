//! A target's validated `aggregate.base.pagination`: how the pages of a paginated base state are
//! found (a next-page link in the body or the `Link` header, a cursor, or page/offset query
//! parameters) and how many pages and bytes one base state may have. Data only: it fetches
//! nothing and reads no page.

/// How one base state is fetched in pages. All the pages of one fetch form one base state, with
/// the first page's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pagination {
    /// Where the next page is.
    pub mode: PageMode,
    /// Most pages one base state may have (at least 1); more is an error and no base state.
    pub max_pages: usize,
    /// Most bytes all the pages of one base state may have together (at least 1).
    pub max_bytes: usize,
}

impl Pagination {
    /// Default [`Pagination::max_pages`].
    pub const DEFAULT_MAX_PAGES: usize = 1_000;
    /// Default [`Pagination::max_bytes`]: 256 MiB, the limit of a single-document base state.
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;
}

/// Where a page says (or the request implies) the next page is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageMode {
    /// `next_link`: the next page's URL (absolute or relative to the page's) at a JSON Pointer
    /// into the page; absent, `null` or `""` on the last page.
    NextLink {
        /// The pointer.
        pointer: String,
    },
    /// `link_header`: the next page's URL in the `Link` header with `rel="next"`; none on the
    /// last page.
    LinkHeader,
    /// `cursor`: the next page's cursor (a string or an integer) at a JSON Pointer into the
    /// page, sent as a query parameter of the base URL; absent, `null` or `""` on the last page.
    Cursor {
        /// The pointer to the cursor.
        pointer: String,
        /// The query parameter it is sent in.
        param: String,
    },
    /// `page`: a page number in a query parameter, from `first` up; the first page without
    /// items is the end.
    Page {
        /// The query parameter of the page number.
        param: String,
        /// The number of the first page.
        first: u64,
        /// The page size to ask for, when the endpoint takes one.
        size: Option<PageSize>,
    },
    /// `offset`: the number of items already read in a query parameter, from 0; the first page
    /// without items is the end.
    Offset {
        /// The query parameter of the offset.
        param: String,
        /// The page size to ask for, when the endpoint takes one.
        size: Option<PageSize>,
    },
}

impl PageMode {
    /// The mode names as written in `mode:`.
    pub const NAMES: [&'static str; 5] = ["next_link", "link_header", "cursor", "page", "offset"];

    /// The mode's name as written in `mode:` (a bounded label).
    pub fn as_str(&self) -> &'static str {
        match self {
            PageMode::NextLink { .. } => "next_link",
            PageMode::LinkHeader => "link_header",
            PageMode::Cursor { .. } => "cursor",
            PageMode::Page { .. } => "page",
            PageMode::Offset { .. } => "offset",
        }
    }
}

/// A page size and the query parameter it is sent in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSize {
    /// The query parameter.
    pub param: String,
    /// Items per page (at least 1).
    pub size: u64,
}
