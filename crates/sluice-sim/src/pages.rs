//! The paginated snapshot, `GET /v1/snapshot/pages`: the state at the moment of each request,
//! served a page at a time in one of the ways REST APIs page (`style=`):
//!
//! - `body`: `?page_size=N[&after=KEY]`; the page has `"next"`: the next page's URL, relative
//!   (`/v1/snapshot/pages?…`), or `null` on the last page.
//! - `header`: the same pages; the next page is in `Link: <pages?…>; rel="next"` (relative to the
//!   page's URL, after a `rel="first"` link), no `Link` with `rel="next"` on the last page.
//! - `cursor`: `?page_size=N[&cursor=KEY]`; the page has `"next_cursor"`: the key to send as
//!   `cursor` next, or `null` on the last page.
//! - `page`: `?page=P&page_size=N`, `P` from 1; a page past the end has no items.
//! - `offset`: `?offset=O&limit=N`; an offset past the end has no items.
//!
//! Every page is `{"version": V, "items": [...]}` (plus `next`/`next_cursor`) with the version of
//! the state it was cut from. `body`, `header` and `cursor` page by key (the items after `KEY`),
//! so a deleted key does not shift the next page; `page` and `offset` page by position, as such
//! APIs do. A page size is 1 to [`MAX_PAGE_SIZE`], 100 when not given.
//!
//! It must not keep state between requests (each page is cut from the current state) and must
//! not depend on any Sluice crate, like the rest of the simulator.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::{Item, Snapshot};

/// The largest page size a request may ask for.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// The page size when a request names none.
const DEFAULT_PAGE_SIZE: usize = 100;

/// The query of one page request, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    style: Option<String>,
    page_size: Option<usize>,
    after: Option<String>,
    cursor: Option<String>,
    page: Option<usize>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// One page to answer: its body and, for `style=header`, its `Link` header value.
#[derive(Debug)]
pub(crate) struct PageAnswer {
    pub body: Value,
    pub link: Option<String>,
}

/// The page `query` asks for, cut from `snapshot`, or what is wrong with the query.
pub(crate) fn page(snapshot: &Snapshot, query: &PageQuery) -> Result<PageAnswer, String> {
    let style = query.style.as_deref().unwrap_or("body");
    let size = size(if style == "offset" {
        query.limit
    } else {
        query.page_size
    })?;
    let items = &snapshot.items;
    let (start, next_key) = match style {
        "body" | "header" => keyset(items, query.after.as_deref(), size),
        "cursor" => keyset(items, query.cursor.as_deref(), size),
        "page" => {
            let page = query.page.unwrap_or(1);
            if page == 0 {
                return Err("page counts from 1".to_owned());
            }
            ((page - 1).saturating_mul(size), None)
        }
        "offset" => (query.offset.unwrap_or(0), None),
        other => {
            return Err(format!(
                "unknown style {other:?}: use body, header, cursor, page or offset"
            ));
        }
    };
    let start = start.min(items.len());
    let end = start.saturating_add(size).min(items.len());
    let mut body = json!({"version": snapshot.version, "items": &items[start..end]});
    // Keys are `E` and digits: nothing in them needs percent-encoding.
    let next_query = |key: &str| format!("style={style}&page_size={size}&after={key}");
    let mut link = None;
    match style {
        "body" => {
            body["next"] = match &next_key {
                Some(key) => json!(format!("/v1/snapshot/pages?{}", next_query(key))),
                None => Value::Null,
            };
        }
        "header" => {
            let first = format!("<pages?style=header&page_size={size}>; rel=\"first\"");
            link = Some(match &next_key {
                Some(key) => format!("{first}, <pages?{}>; rel=\"next\"", next_query(key)),
                None => first,
            });
        }
        "cursor" => body["next_cursor"] = json!(next_key),
        _ => {}
    }
    Ok(PageAnswer { body, link })
}

/// Where a page of the items after `after` starts, and the key after which the next page
/// starts (`None`: this is the last page).
fn keyset(items: &[Item], after: Option<&str>, size: usize) -> (usize, Option<String>) {
    let start = after.map_or(0, |after| {
        items.partition_point(|i| i.key.as_str() <= after)
    });
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len() && end > start).then(|| items[end - 1].key.clone());
    (start, next)
}

fn size(raw: Option<usize>) -> Result<usize, String> {
    match raw.unwrap_or(DEFAULT_PAGE_SIZE) {
        n @ 1..=MAX_PAGE_SIZE => Ok(n),
        n => Err(format!(
            "page size {n} is not between 1 and {MAX_PAGE_SIZE}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(n: u32) -> Snapshot {
        Snapshot {
            version: 7,
            items: (1..=n)
                .map(|i| Item {
                    key: format!("E{i:04}"),
                    price: 1.0,
                    qty: 1,
                    version: 1,
                })
                .collect(),
        }
    }

    fn keys(answer: &PageAnswer) -> Vec<String> {
        answer.body["items"]
            .as_array()
            .map(|items| items.iter().map(|i| i["key"].to_string()).collect())
            .unwrap_or_default()
    }

    fn query(style: &str) -> PageQuery {
        PageQuery {
            style: Some(style.to_owned()),
            page_size: Some(2),
            ..PageQuery::default()
        }
    }

    #[test]
    fn keyset_pages_end_with_no_next() {
        let state = snapshot(3);
        let first = page(&state, &query("body")).expect("valid");
        assert_eq!(keys(&first), ["\"E0001\"", "\"E0002\""]);
        assert_eq!(
            first.body["next"],
            "/v1/snapshot/pages?style=body&page_size=2&after=E0002"
        );
        let last = page(
            &state,
            &PageQuery {
                after: Some("E0002".to_owned()),
                ..query("body")
            },
        )
        .expect("valid");
        assert_eq!(keys(&last), ["\"E0003\""]);
        assert_eq!(last.body["next"], Value::Null);
        let header = page(&state, &query("header")).expect("valid");
        assert!(
            header
                .link
                .as_deref()
                .is_some_and(|l| l.ends_with("after=E0002>; rel=\"next\"")),
            "{header:?}"
        );
        let cursor = page(&state, &query("cursor")).expect("valid");
        assert_eq!(cursor.body["next_cursor"], "E0002");
    }

    #[test]
    fn positional_pages_past_the_end_are_empty_and_bad_queries_are_refused() {
        let state = snapshot(3);
        let past = PageQuery {
            page: Some(3),
            ..query("page")
        };
        assert!(keys(&page(&state, &past).expect("valid")).is_empty());
        let offset = PageQuery {
            offset: Some(2),
            limit: Some(5),
            ..query("offset")
        };
        assert_eq!(keys(&page(&state, &offset).expect("valid")), ["\"E0003\""]);
        let zero = PageQuery {
            page: Some(0),
            ..query("page")
        };
        assert!(page(&state, &zero).is_err());
        assert!(page(&state, &query("nope")).is_err());
        let huge = PageQuery {
            page_size: Some(MAX_PAGE_SIZE + 1),
            ..query("body")
        };
        assert!(page(&state, &huge).is_err());
    }
}
