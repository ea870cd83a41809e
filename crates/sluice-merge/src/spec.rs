//! What a target's merge needs to know about its upstream's documents: where the items, keys and
//! versions are, and how a delta changes an entity. Built (and validated) by `sluice-config` from
//! a target file's `aggregate:` section; nothing here checks it again.

pub use crate::limits::EntityLimits;

/// How one target's base state and deltas are read and merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSpec {
    /// JSON Pointer (RFC 6901) to the array of entities in the base-state document.
    pub base_items: String,
    /// JSON Pointer into each base item to its key (a string or an integer).
    pub base_key: String,
    /// JSON Pointer to the snapshot version in the base-state document; `None` = unversioned.
    pub base_version: Option<String>,
    /// JSON Pointer into a delta's data to the entity key (a string or an integer).
    pub key: String,
    /// JSON Pointer into a delta's data to the entity (`replace`) or patch (`merge_patch`,
    /// `json_patch`); `None` = the whole data.
    pub value: Option<String>,
    /// Where a delta's version is.
    pub version: VersionSpec,
    /// `true`: versions are contiguous (each delta's first version is the previous last + 1), so a
    /// jump is a gap that triggers a fresh base state. `false`: versions only increase.
    pub contiguous: bool,
    /// How a delta changes its entity.
    pub strategy: Strategy,
    /// Event types that delete the entity named by `key`.
    pub delete_events: Vec<String>,
    /// Event types that carry no delta (heartbeats, notices): counted and skipped.
    pub ignore_events: Vec<String>,
    /// Event types by which the upstream says continuity is broken: fetch a fresh base state.
    pub reset_events: Vec<String>,
    /// Most deltas held while waiting for a base state; past it the oldest are dropped.
    pub max_buffered: usize,
    /// Most bytes the held deltas may take (their data and ids, plus a fixed cost per delta);
    /// past it they are treated as past [`MergeSpec::max_buffered`]. One delta is always held,
    /// however large (the parser's event limit bounds it).
    pub max_buffered_bytes: usize,
    /// Most entities the target's state may hold: a delta that would add one more is refused
    /// (malformed, dead-lettered), a base state with more items is refused (the fetch fails
    /// and is retried).
    pub max_entities: usize,
    /// For unversioned targets: how many recent `sse.id`s are remembered to drop duplicates.
    pub dedupe_window: usize,
    /// The most a `json_patch` entity may become; a delta that would pass it is refused.
    pub limits: EntityLimits,
}

impl MergeSpec {
    /// Default [`MergeSpec::max_buffered`].
    pub const DEFAULT_MAX_BUFFERED: usize = 100_000;
    /// Default [`MergeSpec::max_buffered_bytes`]: 64 MiB.
    pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
    /// Default [`MergeSpec::max_entities`].
    pub const DEFAULT_MAX_ENTITIES: usize = 1_000_000;
    /// Default [`MergeSpec::dedupe_window`].
    pub const DEFAULT_DEDUPE_WINDOW: usize = 10_000;
}

/// Where a delta's version is (each pointer into the delta's data; values are non-negative
/// integers, as JSON numbers or decimal strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// Deltas carry no version: duplicates are found by `sse.id`, gaps cannot be seen.
    None,
    /// One version per delta.
    Single(String),
    /// A range per delta, as order books send (`first` ..= `last`, e.g. Binance's `U` and `u`).
    Range {
        /// Pointer to the first version the delta covers.
        first: String,
        /// Pointer to the last version the delta covers.
        last: String,
    },
}

/// How a delta changes its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The delta (or its `value`) is the whole new entity: upsert by key.
    Replace,
    /// The delta is an RFC 7396 JSON Merge Patch applied to the entity (created from `{}`).
    MergePatch,
    /// The delta is an RFC 6902 JSON Patch (an array of operations) applied to an existing entity.
    JsonPatch,
}

impl Strategy {
    /// Every strategy, in config order.
    pub const ALL: [Strategy; 3] = [Strategy::Replace, Strategy::MergePatch, Strategy::JsonPatch];

    /// The config and label name: `replace`, `merge_patch`, `json_patch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Replace => "replace",
            Strategy::MergePatch => "merge_patch",
            Strategy::JsonPatch => "json_patch",
        }
    }
}
