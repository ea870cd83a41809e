//! Links a client follows: a redirect's `Location`, and the next page of a paginated document (a
//! URL in its body, or the `Link` header's `rel="next"`, RFC 8288). Every link resolves against
//! the URL it came with, under one rule: `http` or `https` only, never from `https` down to plain
//! `http`. Which headers may go where a link points is [`crate::Client`]'s rule (the target's own
//! headers only to its own origin), not this module's.
//!
//! What it must NOT do: send anything, or show a link's text (it may carry a token): errors say
//! what is wrong, and show a resolved URL only through [`redact_url`].

use url::Url;

use crate::redact::redact_url;

/// Why a link cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Empty, not a URL, or not `http`/`https` (the reason, never the link's text).
    #[error("{0}")]
    Unusable(&'static str),
    /// From `https` to plain `http`: the request would cross the network in the clear.
    #[error("refused a link from https to plain http ({to})")]
    Downgrade {
        /// Where it pointed, redacted.
        to: String,
    },
}

/// Where `text` (absolute, or relative to `current`) points; no fragment.
pub fn resolve_link(current: &Url, text: &str) -> Result<Url, LinkError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(LinkError::Unusable("the location is empty"));
    }
    let mut next = current
        .join(text)
        .map_err(|_| LinkError::Unusable("the location is not a url"))?;
    next.set_fragment(None);
    match (current.scheme(), next.scheme()) {
        ("https", "http") => Err(LinkError::Downgrade {
            to: redact_url(&next),
        }),
        (_, "http" | "https") => Ok(next),
        _ => Err(LinkError::Unusable(
            "the location is not an http or https url",
        )),
    }
}

/// The target of the first link with relation type `next` in `Link` header values (each may
/// hold several links, comma-separated); `None` when there is none.
pub fn next_in_link_header<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    values.into_iter().find_map(|value| {
        links(value)
            .find(|(_, params)| has_rel_next(params))
            .map(|(target, _)| target)
    })
}

/// Each `<target>; params` of one header value, as (target, params text). Commas inside the
/// target or inside quoted parameter values do not split links.
fn links(value: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = value;
    std::iter::from_fn(move || {
        let start = rest.find('<')?;
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let params = &after[end + 1..];
        let params_end = unquoted(params, ',').unwrap_or(params.len());
        rest = &params[params_end..];
        Some((target, &params[..params_end]))
    })
}

/// The first `separator` outside a quoted string.
fn unquoted(text: &str, separator: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if c == separator && !quoted => return Some(index),
            _ => {}
        }
    }
    None
}

/// Whether `params` (`; rel="next prev"; title=...`) has a `rel` naming `next` (case-insensitive).
fn has_rel_next(params: &str) -> bool {
    let mut rest = params;
    loop {
        let end = unquoted(rest, ';').unwrap_or(rest.len());
        if let Some((name, value)) = rest[..end].split_once('=')
            && name.trim().eq_ignore_ascii_case("rel")
            && value
                .trim()
                .trim_matches('"')
                .split_ascii_whitespace()
                .any(|rel| rel.eq_ignore_ascii_case("next"))
        {
            return true;
        }
        if end == rest.len() {
            return false;
        }
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(current: &str, text: &str) -> Result<String, String> {
        let current = Url::parse(current).expect("test url");
        resolve_link(&current, text)
            .map(|u| u.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn links_resolve_against_the_current_url_without_a_fragment() {
        assert_eq!(
            resolved("http://a/x/y?p=1", "z?p=2"),
            Ok("http://a/x/z?p=2".into())
        );
        assert_eq!(
            resolved("http://a/x/y", "/s?q=1#f"),
            Ok("http://a/s?q=1".into())
        );
        assert_eq!(
            resolved("http://a/x", " https://b/y "),
            Ok("https://b/y".into())
        );
        assert_eq!(resolved("https://a/x", "//b/y"), Ok("https://b/y".into()));
    }

    #[test]
    fn unusable_links_say_why_without_their_text() {
        assert_eq!(
            resolved("http://a/x", ""),
            Err("the location is empty".into())
        );
        assert_eq!(
            resolved("http://a/x", "ftp://b/y"),
            Err("the location is not an http or https url".into())
        );
        assert_eq!(
            resolved("http://a/x", "http://[::1"),
            Err("the location is not a url".into())
        );
        let shown = resolved("https://a/x", "http://b/y?token=s3cret").expect_err("downgrade");
        assert_eq!(
            shown,
            "refused a link from https to plain http (http://b/y?***)"
        );
    }

    #[test]
    fn the_link_header_names_the_next_page_among_other_relations() {
        let next = |values: &[&'static str]| next_in_link_header(values.iter().copied());
        assert_eq!(next(&[r#"</p?page=2>; rel="next""#]), Some("/p?page=2"));
        assert_eq!(
            next(&[r#"<https://a/p?x=1,2>; rel="prev", <https://a/p?page=3>; rel=next"#]),
            Some("https://a/p?page=3")
        );
        assert_eq!(
            next(&[
                r#"<a>; title="a, b; rel=next", <b>; rel="last""#,
                r#"<c>; REL="prefetch NEXT""#
            ]),
            Some("c")
        );
        assert_eq!(next(&[r#"<a>; rel="last""#, "garbage", "<unclosed"]), None);
        assert_eq!(next(&[]), None);
    }
}
