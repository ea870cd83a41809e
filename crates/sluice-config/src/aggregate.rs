//! A target's validated `aggregate` section: where its REST base state is and how its deltas merge
//! into that state (the [`MergeSpec`] the aggregator hands to `sluice-merge`).

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use sluice_merge::MergeSpec;
use url::Url;

use crate::pagination::Pagination;
use crate::target::{HeaderError, HeaderSource, resolve_header_list};

/// How the aggregator rebuilds one target's state. Base-state fetches also send the target's
/// `auth` and go through the target's proxy with its TLS roots; those stay on the
/// [`TargetConfig`](crate::TargetConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateConfig {
    /// The REST base-state (snapshot) endpoint, `http` or `https`, without a password.
    pub base_url: Url,
    /// Extra request headers of base-state fetches (`aggregate.base.headers`).
    pub base_headers: Vec<(HeaderName, HeaderSource)>,
    /// Limit on one base-state fetch (on each page of a paginated one), response body
    /// included; never zero.
    pub base_timeout: Duration,
    /// How the base state is fetched in pages (`aggregate.base.pagination`); `None`: it is one
    /// document.
    pub pagination: Option<Pagination>,
    /// Where items, keys and versions are, and how a delta changes an entity.
    pub spec: MergeSpec,
}

impl AggregateConfig {
    /// Default [`AggregateConfig::base_timeout`].
    pub const DEFAULT_BASE_TIMEOUT: Duration = Duration::from_secs(10);

    /// The base-state request headers to send now (`aggregate.base.headers` only; add the target's
    /// own with [`TargetConfig::resolve_headers`](crate::TargetConfig::resolve_headers)), every
    /// secret read afresh and marked sensitive.
    pub fn resolve_base_headers(&self) -> Result<HeaderMap, HeaderError> {
        resolve_header_list(&self.base_headers)
    }
}

#[cfg(test)]
mod tests {
    use sluice_merge::{Strategy, VersionSpec};

    use super::*;
    use crate::secret::SecretRef;

    #[test]
    fn base_headers_resolve_plain_values_and_secrets_marked_sensitive() {
        let dir = std::env::temp_dir().join(format!("sluice-base-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        std::fs::write(dir.join("key"), "k-123\n").expect("writable");
        let aggregate = AggregateConfig {
            base_url: Url::parse("http://127.0.0.1/v1/snapshot").expect("valid url"),
            base_headers: vec![
                (
                    HeaderName::from_static("accept"),
                    HeaderSource::Plain("application/json".to_owned()),
                ),
                (
                    HeaderName::from_static("x-api-key"),
                    HeaderSource::Secret(SecretRef::File(dir.join("key"))),
                ),
            ],
            base_timeout: AggregateConfig::DEFAULT_BASE_TIMEOUT,
            pagination: None,
            spec: MergeSpec {
                base_items: "/items".to_owned(),
                base_key: "/key".to_owned(),
                base_version: None,
                key: "/key".to_owned(),
                value: None,
                version: VersionSpec::None,
                contiguous: false,
                strategy: Strategy::Replace,
                delete_events: Vec::new(),
                ignore_events: Vec::new(),
                reset_events: Vec::new(),
                max_buffered: MergeSpec::DEFAULT_MAX_BUFFERED,
                dedupe_window: MergeSpec::DEFAULT_DEDUPE_WINDOW,
                max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
                max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
                limits: Default::default(),
            },
        };
        let headers = aggregate
            .resolve_base_headers()
            .expect("secret file exists");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(headers["accept"], "application/json");
        assert!(!headers["accept"].is_sensitive());
        assert_eq!(headers["x-api-key"], "k-123");
        assert!(headers["x-api-key"].is_sensitive());
        let debug = format!("{headers:?} {aggregate:?}");
        assert!(!debug.contains("k-123"), "{debug}");
    }
}
