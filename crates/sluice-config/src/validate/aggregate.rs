//! A target's `aggregate` section into an [`AggregateConfig`]: the base-state request, the JSON
//! Pointers into base and delta documents, and the merge rules, each checked against the others.

use std::collections::BTreeMap;

use sluice_merge::{EntityLimits, MergeSpec, Strategy, VersionSpec};

use super::Checker;
use crate::aggregate::AggregateConfig;
use crate::problem::ProblemKind;
use crate::raw::{RawAggregate, RawBase, RawDelta, RawEntityLimits};
use crate::target::RecordKey;

/// Validates `raw` (the target's record `key` and `event_types` are checked against it).
pub(super) fn aggregate(
    c: &mut Checker<'_>,
    raw: &RawAggregate,
    key: &RecordKey,
    event_types: &[String],
) -> Option<AggregateConfig> {
    let before = c.problems.len();

    if matches!(key, RecordKey::Pointer(_)) {
        c.report(
            "key",
            ProblemKind::Invalid,
            "a target with an aggregate section must have the record key target (the target id): \
             the aggregator needs all of the target's deltas in one partition, in order (entity \
             keys come from aggregate.delta.key)"
                .to_owned(),
        );
    }

    let no_base = RawBase::default();
    let base = raw.base.as_ref().unwrap_or_else(|| {
        c.report(
            "aggregate.base",
            ProblemKind::Missing,
            "missing base section: name the base-state endpoint (url) and where its entities \
             are (items, key)"
                .to_owned(),
        );
        &no_base
    });
    let has_base = raw.base.is_some();
    let base_url = required(
        c,
        has_base,
        "aggregate.base.url",
        base.url.as_deref(),
        "the base-state (snapshot) endpoint",
    )
    .and_then(|url| c.http_url("aggregate.base.url", url));
    let base_headers = c.headers("aggregate.base.headers", &base.headers);
    let base_items = required_pointer(
        c,
        has_base,
        "aggregate.base.items",
        base.items.as_deref(),
        "the pointer to the array of entities in the base state",
    );
    let base_key = required_pointer(
        c,
        has_base,
        "aggregate.base.key",
        base.key.as_deref(),
        "the pointer into each base item to its key",
    );
    let base_version = optional_pointer(c, "aggregate.base.version", base.version.as_deref());
    let base_timeout = c.duration(
        "aggregate.base.timeout",
        base.timeout.as_deref(),
        AggregateConfig::DEFAULT_BASE_TIMEOUT,
    );
    c.positive("aggregate.base.timeout", base_timeout);
    let pagination = base
        .pagination
        .as_ref()
        .and_then(|raw| super::pagination::pagination(c, raw));

    let no_delta = RawDelta::default();
    let delta = raw.delta.as_ref().unwrap_or_else(|| {
        c.report(
            "aggregate.delta",
            ProblemKind::Missing,
            "missing delta section: name at least key, the pointer to the entity key in each \
             event's data"
                .to_owned(),
        );
        &no_delta
    });
    let delta_key = required_pointer(
        c,
        raw.delta.is_some(),
        "aggregate.delta.key",
        delta.key.as_deref(),
        "the pointer to the entity key in each event's data",
    );
    let value = optional_pointer(c, "aggregate.delta.value", delta.value.as_deref());
    let version = version(c, delta);
    let versioned = version != VersionSpec::None;
    if versioned && has_base && base.version.is_none() {
        c.report(
            "aggregate.base.version",
            ProblemKind::Missing,
            "missing base version: the deltas carry versions, and only the base state's version \
             tells which of them it already holds"
                .to_owned(),
        );
    }
    if delta.contiguous.is_some() && !versioned {
        c.report(
            "aggregate.delta.contiguous",
            ProblemKind::Invalid,
            "contiguous applies only to versioned deltas: set delta.version (or \
             delta.first_version and delta.last_version), or remove contiguous"
                .to_owned(),
        );
    }

    let strategy = strategy(c, raw.strategy.as_deref());
    event_lists(c, raw, event_types);
    let max_buffered = positive(
        c,
        "aggregate.max_buffered",
        raw.max_buffered,
        MergeSpec::DEFAULT_MAX_BUFFERED,
        "deltas are held here while a base state is fetched",
    );
    let max_buffered_bytes = positive(
        c,
        "aggregate.max_buffered_bytes",
        raw.max_buffered_bytes,
        MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        "the most bytes of deltas held while a base state is fetched",
    );
    let max_entities = positive(
        c,
        "aggregate.max_entities",
        raw.max_entities,
        MergeSpec::DEFAULT_MAX_ENTITIES,
        "the most entities the target's state may hold",
    );
    let dedupe_window = count(
        c,
        "aggregate.dedupe_window",
        raw.dedupe_window,
        MergeSpec::DEFAULT_DEDUPE_WINDOW,
    );
    let limits = limits(c, raw.limits.as_ref());

    if c.problems.len() != before {
        return None;
    }
    Some(AggregateConfig {
        base_url: base_url?,
        base_headers,
        base_timeout,
        pagination,
        spec: MergeSpec {
            base_items: base_items?,
            base_key: base_key?,
            base_version,
            key: delta_key?,
            value,
            contiguous: versioned && delta.contiguous.unwrap_or(true),
            version,
            strategy: strategy?,
            delete_events: raw.delete_events.clone(),
            ignore_events: raw.ignore_events.clone(),
            reset_events: raw.reset_events.clone(),
            max_buffered,
            max_buffered_bytes,
            max_entities,
            dedupe_window,
            limits,
        },
    })
}

/// A required value (`meaning` says what it is): reported as missing when its section was
/// written without it (a missing section is reported once, on the section).
fn required<'r>(
    c: &mut Checker<'_>,
    section_given: bool,
    field: &str,
    raw: Option<&'r str>,
    meaning: &str,
) -> Option<&'r str> {
    if raw.is_none() && section_given {
        let key = field.rsplit('.').next().unwrap_or(field);
        c.report(
            field,
            ProblemKind::Missing,
            format!("missing {key}: {meaning}"),
        );
    }
    raw
}

fn required_pointer(
    c: &mut Checker<'_>,
    section_given: bool,
    field: &str,
    raw: Option<&str>,
    meaning: &str,
) -> Option<String> {
    required(c, section_given, field, raw, meaning).map(|pointer| c.pointer(field, pointer))
}

fn optional_pointer(c: &mut Checker<'_>, field: &str, raw: Option<&str>) -> Option<String> {
    raw.map(|pointer| c.pointer(field, pointer))
}

/// `version`, or `first_version` with `last_version`, or none of them.
fn version(c: &mut Checker<'_>, delta: &RawDelta) -> VersionSpec {
    let single = optional_pointer(c, "aggregate.delta.version", delta.version.as_deref());
    let first = optional_pointer(
        c,
        "aggregate.delta.first_version",
        delta.first_version.as_deref(),
    );
    let last = optional_pointer(
        c,
        "aggregate.delta.last_version",
        delta.last_version.as_deref(),
    );
    match (single, first, last) {
        (None, None, None) => VersionSpec::None,
        (Some(single), None, None) => VersionSpec::Single(single),
        (None, Some(first), Some(last)) => VersionSpec::Range { first, last },
        (Some(single), _, _) => {
            c.report(
                "aggregate.delta.version",
                ProblemKind::Invalid,
                "version and first_version/last_version exclude each other: write version for \
                 one version per delta, or first_version and last_version for a range"
                    .to_owned(),
            );
            VersionSpec::Single(single)
        }
        (None, Some(first), None) => {
            c.report(
                "aggregate.delta.last_version",
                ProblemKind::Missing,
                "missing last_version: a version range needs both first_version and last_version"
                    .to_owned(),
            );
            VersionSpec::Single(first)
        }
        (None, None, Some(last)) => {
            c.report(
                "aggregate.delta.first_version",
                ProblemKind::Missing,
                "missing first_version: a version range needs both first_version and last_version"
                    .to_owned(),
            );
            VersionSpec::Single(last)
        }
    }
}

fn strategy(c: &mut Checker<'_>, raw: Option<&str>) -> Option<Strategy> {
    let Some(raw) = raw else {
        return Some(Strategy::Replace);
    };
    let strategy = Strategy::ALL.into_iter().find(|s| s.as_str() == raw);
    if strategy.is_none() {
        let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
        c.report(
            "aggregate.strategy",
            ProblemKind::Invalid,
            format!("unknown strategy {raw:?}: use one of {}", names.join(", ")),
        );
    }
    strategy
}

/// `delete_events`, `ignore_events` and `reset_events`: no empty type, no type in two lists, and
/// (when the target filters `event_types`) every delete and reset type published.
fn event_lists(c: &mut Checker<'_>, raw: &RawAggregate, event_types: &[String]) {
    let lists = [
        ("delete_events", &raw.delete_events),
        ("ignore_events", &raw.ignore_events),
        ("reset_events", &raw.reset_events),
    ];
    let mut first_list: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, list) in lists {
        let field = format!("aggregate.{name}");
        c.event_types(&field, list);
        for (i, event_type) in list.iter().enumerate() {
            let field = format!("{field}[{i}]");
            match first_list.get(event_type.as_str()) {
                Some(&other) if other != name => c.report(
                    &field,
                    ProblemKind::Invalid,
                    format!(
                        "event type {event_type:?} is also in {other}: an event type has one meaning"
                    ),
                ),
                Some(_) => {}
                None => {
                    first_list.insert(event_type, name);
                }
            }
            let filtered_out = !event_types.is_empty() && !event_types.contains(event_type);
            if filtered_out && name != "ignore_events" {
                c.report(
                    &field,
                    ProblemKind::Invalid,
                    format!(
                        "event type {event_type:?} is not in event_types, so the worker never \
                         publishes it"
                    ),
                );
            }
        }
    }
}

/// `aggregate.limits`: each at least 1, the depth at most [`EntityLimits::MAX_MAX_DEPTH`].
fn limits(c: &mut Checker<'_>, raw: Option<&RawEntityLimits>) -> EntityLimits {
    let (bytes, depth) = raw.map_or((None, None), |r| (r.max_entity_bytes, r.max_depth));
    let max_entity_bytes = count(
        c,
        "aggregate.limits.max_entity_bytes",
        bytes,
        EntityLimits::DEFAULT_MAX_ENTITY_BYTES,
    );
    if max_entity_bytes == 0 {
        c.report(
            "aggregate.limits.max_entity_bytes",
            ProblemKind::Invalid,
            "must be at least 1: the most bytes a json_patch delta may make an entity".to_owned(),
        );
    }
    let max_depth = count(
        c,
        "aggregate.limits.max_depth",
        depth,
        EntityLimits::DEFAULT_MAX_DEPTH,
    );
    if max_depth == 0 || max_depth > EntityLimits::MAX_MAX_DEPTH {
        c.report(
            "aggregate.limits.max_depth",
            ProblemKind::Invalid,
            format!(
                "must be between 1 and {}: snapshots and base states are read back with a \
                 nesting limit of 128, and a snapshot nests each entity a few levels deep",
                EntityLimits::MAX_MAX_DEPTH
            ),
        );
    }
    EntityLimits {
        max_entity_bytes,
        max_depth,
    }
}

/// [`count`] that must be at least 1 (`meaning` says why, in the message).
fn positive(
    c: &mut Checker<'_>,
    field: &str,
    raw: Option<u64>,
    default: usize,
    meaning: &str,
) -> usize {
    let value = count(c, field, raw, default);
    if value == 0 {
        c.report(
            field,
            ProblemKind::Invalid,
            format!("must be at least 1: {meaning}"),
        );
    }
    value
}

pub(super) fn count(c: &mut Checker<'_>, field: &str, raw: Option<u64>, default: usize) -> usize {
    let Some(raw) = raw else {
        return default;
    };
    usize::try_from(raw).unwrap_or_else(|_| {
        c.report(field, ProblemKind::Invalid, format!("{raw} is too large"));
        default
    })
}
