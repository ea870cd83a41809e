//! Target specs that more than one test file merges by.

use sluice_merge::{MergeSpec, Strategy, VersionSpec};

/// An unversioned `json_patch` target: base `{"items": [{"id": .., ...}]}`, deltas
/// `{"id": .., "ops": [...]}`, reset by `reset` events, default limits.
pub fn unversioned_json_patch() -> MergeSpec {
    MergeSpec {
        base_items: "/items".into(),
        base_key: "/id".into(),
        base_version: None,
        key: "/id".into(),
        value: Some("/ops".into()),
        version: VersionSpec::None,
        contiguous: false,
        strategy: Strategy::JsonPatch,
        delete_events: Vec::new(),
        ignore_events: Vec::new(),
        reset_events: vec!["reset".into()],
        max_buffered: 100,
        dedupe_window: 100,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    }
}
