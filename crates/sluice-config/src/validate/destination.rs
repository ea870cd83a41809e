//! `deliveries[].destination` into a [`Destination`]: exactly one of `dir` (a directory, relative
//! to the aggregator file) or `s3` (a bucket, its prefix, an optional S3-compatible endpoint and
//! credentials as secret references). Checks names and references; it connects to nothing.

use super::Checker;
use crate::delivery::{Destination, S3Credentials, S3Destination};
use crate::problem::ProblemKind;
use crate::raw::{RawDestination, RawS3};

/// The destination of the entry at `at` (`deliveries[i]`); `None` after reporting a problem.
pub(super) fn destination(
    c: &mut Checker<'_>,
    at: &str,
    raw: Option<RawDestination>,
) -> Option<Destination> {
    let raw = raw.unwrap_or_default();
    match (raw.dir, raw.s3) {
        (Some(_), Some(_)) => {
            c.report(
                &format!("{at}.destination"),
                ProblemKind::Invalid,
                "give dir or s3, not both".to_owned(),
            );
            None
        }
        (None, None) => {
            c.report(
                &format!("{at}.destination"),
                ProblemKind::Missing,
                "missing destination: dir (a directory, relative to this file) or s3 (a bucket)"
                    .to_owned(),
            );
            None
        }
        (Some(dir), None) if dir.is_empty() => {
            c.report(
                &format!("{at}.destination.dir"),
                ProblemKind::Missing,
                "missing delivery directory: name one, relative to this file".to_owned(),
            );
            None
        }
        (Some(dir), None) => Some(Destination::Dir(c.dir().join(dir))),
        (None, Some(s3)) => {
            s3_destination(c, &format!("{at}.destination.s3"), s3).map(Destination::S3)
        }
    }
}

fn s3_destination(c: &mut Checker<'_>, at: &str, raw: RawS3) -> Option<S3Destination> {
    let mut ok = true;
    let bucket = raw.bucket.unwrap_or_default();
    if let Err(why) = bucket_name(&bucket) {
        c.report(&format!("{at}.bucket"), ProblemKind::Invalid, why);
        ok = false;
    }
    let prefix = match prefix(raw.prefix.as_deref().unwrap_or_default()) {
        Ok(prefix) => prefix,
        Err(why) => {
            c.report(&format!("{at}.prefix"), ProblemKind::Invalid, why);
            ok = false;
            String::new()
        }
    };
    let endpoint = match raw.endpoint.as_deref() {
        None => None,
        Some(text) => match super::aggregator::base_url(text) {
            Ok(url) => Some(url),
            Err(why) => {
                c.report(
                    &format!("{at}.endpoint"),
                    ProblemKind::Invalid,
                    // Not echoed: a URL with credentials in it would put them in the message.
                    format!(
                        "bad endpoint ({why}): write scheme://host[:port], e.g. \
                         http://127.0.0.1:9000 (leave it out for AWS)"
                    ),
                );
                ok = false;
                None
            }
        },
    };
    let region = match raw.region {
        None => S3Destination::DEFAULT_REGION.to_owned(),
        Some(region) if valid_region(&region) => region,
        Some(region) => {
            c.report(
                &format!("{at}.region"),
                ProblemKind::Invalid,
                format!("bad region {region:?}: use a-z 0-9 -, e.g. us-east-1"),
            );
            ok = false;
            String::new()
        }
    };
    let credentials = match (&raw.access_key_id, &raw.secret_access_key) {
        (None, None) => {
            if raw.session_token.is_some() {
                c.report(
                    &format!("{at}.session_token"),
                    ProblemKind::Invalid,
                    "a session token needs access_key_id and secret_access_key".to_owned(),
                );
                ok = false;
            }
            None
        }
        (Some(id), Some(key)) => {
            let id = c.secret(&format!("{at}.access_key_id"), id);
            let key = c.secret(&format!("{at}.secret_access_key"), key);
            let token = match &raw.session_token {
                None => Some(None),
                Some(token) => c.secret(&format!("{at}.session_token"), token).map(Some),
            };
            match (id, key, token) {
                (Some(access_key_id), Some(secret_access_key), Some(session_token)) => {
                    Some(S3Credentials {
                        access_key_id,
                        secret_access_key,
                        session_token,
                    })
                }
                _ => {
                    ok = false;
                    None
                }
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            let missing = if raw.access_key_id.is_none() {
                "access_key_id"
            } else {
                "secret_access_key"
            };
            c.report(
                &format!("{at}.{missing}"),
                ProblemKind::Missing,
                "give both access_key_id and secret_access_key, or neither (the AWS \
                 environment's credentials)"
                    .to_owned(),
            );
            ok = false;
            None
        }
    };
    ok.then_some(S3Destination {
        bucket,
        prefix,
        endpoint,
        region,
        credentials,
    })
}

/// S3's bucket naming rules: 3 to 63 of `a-z 0-9 . -`, starting and ending with a letter or
/// digit, no `..`.
fn bucket_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing bucket: the S3 bucket deliveries are written to".to_owned());
    }
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !chars_ok
        || !ends_ok(name.bytes().next())
        || !ends_ok(name.bytes().last())
        || name.contains("..")
    {
        return Err(format!(
            "bad bucket name {name:?}: 3 to 63 of a-z 0-9 . -, starting and ending with a letter \
             or digit"
        ));
    }
    Ok(())
}

/// The prefix as stored: empty, or its segments joined by `/` with one `/` at the end.
fn prefix(text: &str) -> Result<String, String> {
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad = trimmed.starts_with('/')
        || trimmed
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.chars().any(char::is_control));
    if bad {
        return Err(format!(
            "bad prefix {text:?}: segments separated by single /, none empty, . or .., no \
             leading /"
        ));
    }
    Ok(format!("{trimmed}/"))
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for good in ["abc", "my.bucket-1", "0ab"] {
            assert!(bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            &"a".repeat(64),
        ] {
            assert!(bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_normalised_to_end_in_one_slash() {
        assert_eq!(prefix("").unwrap(), "");
        assert_eq!(prefix("/").unwrap(), "");
        assert_eq!(prefix("a/b").unwrap(), "a/b/");
        assert_eq!(prefix("a/b/").unwrap(), "a/b/");
        for bad in ["/a", "a//b", "a/../b", "./a", "a//"] {
            assert!(prefix(bad).is_err(), "{bad}");
        }
    }
}
