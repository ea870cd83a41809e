//! One base state, fetched: the one document at `aggregate.base.url`, or, with
//! `aggregate.base.pagination`, its pages in order, following the next-page link (in the body
//! or the `Link` header), the cursor, or page/offset query parameters until the last page. All
//! the pages go to the merger together (`Merger::load_base_pages`) as one base state with the
//! first page's version; a fetch that goes past `max_pages` or `max_bytes`, or comes back to a
//! URL or cursor it already fetched, is an error and yields no pages at all.
//!
//! Next-page links resolve against the URL that answered the page (`sluice_client::resolve_link`:
//! no `https` to `http`), and the client sends the target's headers and token only to the base
//! URL's origin, as across redirects.
//!
//! It must not parse entities (the merger does), load anything, retry, or log; and it never
//! shows a link's or cursor's text (either may carry a token), only redacted URLs.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use sluice_client::{Client, FetchError, resolve_link};
use sluice_config::{PageMode, PageSize, Pagination};
use url::Url;

use super::error::{BaseFetchError, PagesError};
use crate::store::TargetDef;

/// Where the pages of one base state are and how large it may be.
pub(super) struct PagedBase<'a> {
    /// The target, for errors.
    pub target: &'a str,
    /// The first page (`aggregate.base.url`).
    pub url: &'a Url,
    pub pagination: &'a Pagination,
    /// `aggregate.base.items`: where a page's items are (page and offset modes count them).
    pub items: &'a str,
    /// Limit on each page.
    pub timeout: Duration,
}

/// What comes after a page.
enum Next {
    Url(Url),
    Last,
}

/// The base state of `def`: its one document, or its pages in order.
pub(super) async fn fetch_base(
    client: &Client,
    def: &TargetDef,
    max_document_bytes: usize,
) -> Result<Vec<Bytes>, BaseFetchError> {
    let aggregate = &def.aggregate;
    let Some(pagination) = &aggregate.pagination else {
        let document = client
            .fetch_document(aggregate.base_timeout, max_document_bytes)
            .await?;
        return Ok(vec![document]);
    };
    let base = PagedBase {
        target: def.id(),
        url: &aggregate.base_url,
        pagination,
        items: &aggregate.spec.base_items,
        timeout: aggregate.base_timeout,
    };
    Ok(fetch_pages(client, &base).await?)
}

/// The pages of one base state, in order.
pub(super) async fn fetch_pages(
    client: &Client,
    base: &PagedBase<'_>,
) -> Result<Vec<Bytes>, PagesError> {
    let mut pages: Vec<Bytes> = Vec::new();
    let mut bytes = 0usize;
    let mut seen: HashSet<String> = HashSet::new();
    // Page and offset modes: the next page's number, or the items read so far.
    let mut position: u64 = match base.pagination.mode {
        PageMode::Page { first, .. } => first,
        _ => 0,
    };
    let mut url = first_url(base.url, &base.pagination.mode);
    loop {
        let number = pages.len() + 1;
        if !seen.insert(url.as_str().to_owned()) {
            return Err(PagesError::Loop {
                target: base.target.to_owned(),
                page: number,
            });
        }
        let remaining = base.pagination.max_bytes.saturating_sub(bytes);
        let page = client
            .fetch_page(&url, base.timeout, remaining)
            .await
            .map_err(|error| match error {
                FetchError::TooLarge { .. } => PagesError::TooManyBytes {
                    target: base.target.to_owned(),
                    limit: base.pagination.max_bytes,
                },
                other => PagesError::Fetch {
                    page: number,
                    source: other,
                },
            })?;
        bytes += page.body.len();
        let next = next_page(base, &page, number, &mut position)?;
        pages.push(page.body);
        let Next::Url(next) = next else {
            return Ok(pages);
        };
        if pages.len() == base.pagination.max_pages {
            return Err(PagesError::TooManyPages {
                target: base.target.to_owned(),
                limit: base.pagination.max_pages,
            });
        }
        url = next;
    }
}

/// The first page's URL: the base URL, with the first page number or offset 0 (and the page
/// size) in page and offset modes.
fn first_url(base: &Url, mode: &PageMode) -> Url {
    match mode {
        PageMode::Page { param, first, size } => positioned(base, param, *first, size.as_ref()),
        PageMode::Offset { param, size } => positioned(base, param, 0, size.as_ref()),
        PageMode::NextLink { .. } | PageMode::LinkHeader | PageMode::Cursor { .. } => base.clone(),
    }
}

/// What page `number` (just fetched) says comes next.
fn next_page(
    base: &PagedBase<'_>,
    page: &sluice_client::Page,
    number: usize,
    position: &mut u64,
) -> Result<Next, PagesError> {
    let bad = |what: &'static str| PagesError::Page {
        target: base.target.to_owned(),
        page: number,
        what,
    };
    let link = |text: &str| {
        resolve_link(&page.url, text)
            .map(Next::Url)
            .map_err(|source| PagesError::Link {
                target: base.target.to_owned(),
                page: number,
                source,
            })
    };
    if let PageMode::LinkHeader = base.pagination.mode {
        return match page.link_next.as_deref() {
            Some(text) => link(text),
            None => Ok(Next::Last),
        };
    }
    let doc: Value = serde_json::from_slice(&page.body).map_err(|_| bad("is not json"))?;
    match &base.pagination.mode {
        PageMode::LinkHeader => Ok(Next::Last),
        PageMode::NextLink { pointer } => match doc.pointer(pointer) {
            None | Some(Value::Null) => Ok(Next::Last),
            Some(Value::String(text)) if text.is_empty() => Ok(Next::Last),
            Some(Value::String(text)) => link(text),
            Some(_) => Err(bad("has a next-page link that is not a string")),
        },
        PageMode::Cursor { pointer, param } => {
            let cursor = match doc.pointer(pointer) {
                None | Some(Value::Null) => return Ok(Next::Last),
                Some(Value::String(text)) if text.is_empty() => return Ok(Next::Last),
                Some(Value::String(text)) => text.clone(),
                Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                Some(_) => return Err(bad("has a cursor that is not a string or an integer")),
            };
            Ok(Next::Url(with_param(base.url, param, &cursor)))
        }
        PageMode::Page { param, size, .. } | PageMode::Offset { param, size } => {
            let count = match doc.pointer(base.items) {
                Some(Value::Array(items)) => items.len(),
                _ => return Err(bad("has no items array")),
            };
            if count == 0 {
                return Ok(Next::Last);
            }
            let step = match base.pagination.mode {
                PageMode::Page { .. } => 1,
                _ => u64::try_from(count).unwrap_or(u64::MAX),
            };
            *position = position.saturating_add(step);
            Ok(Next::Url(positioned(
                base.url,
                param,
                *position,
                size.as_ref(),
            )))
        }
    }
}

/// `base` with `param=position` and the page size parameter.
fn positioned(base: &Url, param: &str, position: u64, size: Option<&PageSize>) -> Url {
    let url = with_param(base, param, &position.to_string());
    match size {
        Some(size) => with_param(&url, &size.param, &size.size.to_string()),
        None => url,
    }
}

/// `url` with query parameter `name` set to `value` (replacing any it had).
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(n, _)| n != name)
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    out
}

#[cfg(test)]
mod tests;
