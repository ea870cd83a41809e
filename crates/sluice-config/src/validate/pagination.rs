//! `aggregate.base.pagination` into a [`Pagination`]: the mode, the fields that mode needs (and
//! no field of another mode), and the bounds on one base state. No I/O.

use super::Checker;
use super::aggregate::count;
use crate::pagination::{PageMode, PageSize, Pagination};
use crate::problem::ProblemKind;
use crate::raw::RawPagination;

const FIELD: &str = "aggregate.base.pagination";

/// Validates `raw`; `None` when something is wrong (every problem is reported).
pub(super) fn pagination(c: &mut Checker<'_>, raw: &RawPagination) -> Option<Pagination> {
    let before = c.problems.len();
    let mode = mode(c, raw);
    let max_pages = bound(
        c,
        "max_pages",
        raw.max_pages,
        Pagination::DEFAULT_MAX_PAGES,
        "the most pages one base state may have",
    );
    let max_bytes = bound(
        c,
        "max_bytes",
        raw.max_bytes,
        Pagination::DEFAULT_MAX_BYTES,
        "the most bytes all the pages of one base state may have together",
    );
    if c.problems.len() != before {
        return None;
    }
    Some(Pagination {
        mode: mode?,
        max_pages,
        max_bytes,
    })
}

fn mode(c: &mut Checker<'_>, raw: &RawPagination) -> Option<PageMode> {
    let names = PageMode::NAMES.join(", ");
    let Some(name) = raw.mode.as_deref() else {
        c.report(
            &format!("{FIELD}.mode"),
            ProblemKind::Missing,
            format!("missing mode: use one of {names}"),
        );
        return None;
    };
    let Some(&name) = PageMode::NAMES.iter().find(|n| **n == name) else {
        c.report(
            &format!("{FIELD}.mode"),
            ProblemKind::Invalid,
            format!("unknown mode {name:?}: use one of {names}"),
        );
        return None;
    };
    // Each field and the modes it belongs to: a field of another mode is a mistake.
    let fields: [(&str, bool, &[&str]); 6] = [
        ("next", raw.next.is_some(), &["next_link"]),
        ("cursor", raw.cursor.is_some(), &["cursor"]),
        ("param", raw.param.is_some(), &["cursor", "page", "offset"]),
        ("size_param", raw.size_param.is_some(), &["page", "offset"]),
        ("size", raw.size.is_some(), &["page", "offset"]),
        ("first_page", raw.first_page.is_some(), &["page"]),
    ];
    for (field, given, modes) in fields {
        if given && !modes.contains(&name) {
            c.report(
                &format!("{FIELD}.{field}"),
                ProblemKind::Invalid,
                format!(
                    "{field} applies only to mode {}, not to {name}",
                    modes.join(" or ")
                ),
            );
        }
    }
    match name {
        "next_link" => Some(PageMode::NextLink {
            pointer: pointer(c, "next", raw.next.as_deref(), "the next page's url")?,
        }),
        "link_header" => Some(PageMode::LinkHeader),
        "cursor" => {
            let pointer = pointer(c, "cursor", raw.cursor.as_deref(), "the next page's cursor");
            let param = param(c, "param", raw.param.as_deref(), "the cursor");
            Some(PageMode::Cursor {
                pointer: pointer?,
                param: param?,
            })
        }
        "page" => {
            let param = param(c, "param", raw.param.as_deref(), "the page number");
            let size = size(c, raw);
            Some(PageMode::Page {
                param: param?,
                first: raw.first_page.unwrap_or(1),
                size: size?,
            })
        }
        _ => {
            let param = param(c, "param", raw.param.as_deref(), "the offset");
            let size = size(c, raw);
            Some(PageMode::Offset {
                param: param?,
                size: size?,
            })
        }
    }
}

/// A required JSON Pointer into each page, `meaning` saying what it points to.
fn pointer(c: &mut Checker<'_>, key: &str, raw: Option<&str>, meaning: &str) -> Option<String> {
    let field = format!("{FIELD}.{key}");
    let Some(raw) = raw else {
        c.report(
            &field,
            ProblemKind::Missing,
            format!("missing {key}: the json pointer to {meaning} in each page"),
        );
        return None;
    };
    Some(c.pointer(&field, raw))
}

/// A required query parameter name for `what`.
fn param(c: &mut Checker<'_>, key: &str, raw: Option<&str>, what: &str) -> Option<String> {
    let field = format!("{FIELD}.{key}");
    match raw {
        None => {
            c.report(
                &field,
                ProblemKind::Missing,
                format!("missing {key}: the query parameter that carries {what}"),
            );
            None
        }
        Some(name) if name.trim().is_empty() => {
            c.report(
                &field,
                ProblemKind::Invalid,
                "the query parameter name must not be empty".to_owned(),
            );
            None
        }
        Some(name) => Some(name.to_owned()),
    }
}

/// `size_param` with `size`, or neither.
fn size(c: &mut Checker<'_>, raw: &RawPagination) -> Option<Option<PageSize>> {
    match (raw.size_param.as_deref(), raw.size) {
        (None, None) => Some(None),
        (Some(_), None) => {
            c.report(
                &format!("{FIELD}.size"),
                ProblemKind::Missing,
                "missing size: size_param needs the page size to send".to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            c.report(
                &format!("{FIELD}.size_param"),
                ProblemKind::Missing,
                "missing size_param: the query parameter that carries size".to_owned(),
            );
            None
        }
        (Some(name), Some(size)) => {
            let param = param(c, "size_param", Some(name), "the page size");
            if size == 0 {
                c.report(
                    &format!("{FIELD}.size"),
                    ProblemKind::Invalid,
                    "must be at least 1: the items per page to ask for".to_owned(),
                );
                return None;
            }
            Some(Some(PageSize {
                param: param?,
                size,
            }))
        }
    }
}

/// `max_pages` or `max_bytes`: at least 1.
fn bound(c: &mut Checker<'_>, key: &str, raw: Option<u64>, default: usize, meaning: &str) -> usize {
    let field = format!("{FIELD}.{key}");
    let value = count(c, &field, raw, default);
    if value == 0 {
        c.report(
            &field,
            ProblemKind::Invalid,
            format!("must be at least 1: {meaning}"),
        );
    }
    value
}
