//! Why a base state or a delta could not be used. Messages name the pointer and never quote the
//! document (it may be large).

/// Why [`crate::Merger::load_base`] refused a base-state document. Nothing changes when it does.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// The epoch is not the one a fetch is pending for: a later fetch was requested (or this
    /// one was loaded already).
    #[error("base state of fetch epoch {epoch} superseded (current epoch {current})")]
    Superseded {
        /// The epoch the base was loaded with.
        epoch: u64,
        /// The merger's current epoch.
        current: u64,
    },
    /// The document is not JSON.
    #[error("base state is not json: {0}")]
    NotJson(String),
    /// The items pointer is missing or not an array.
    #[error("base state items at {0} missing or not an array")]
    Items(String),
    /// An item has no string or integer key.
    #[error("base state item {index} has no string or integer key at {pointer}")]
    Key {
        /// The item's index in the items array.
        index: usize,
        /// The key pointer.
        pointer: String,
    },
    /// The version pointer is missing or not a non-negative integer.
    #[error("base state version at {0} missing or not a non-negative integer")]
    Version(String),
    /// Two items have the same key.
    #[error("base state has key {key:?} twice")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The document has more items than `aggregate.max_entities` allows.
    #[error("base state has more than {max} items (aggregate.max_entities)")]
    TooManyEntities {
        /// The limit.
        max: usize,
    },
    /// A paginated base state arrived without a page (a caller's bug: a fetch has a first page).
    #[error("base state has no page")]
    NoPages,
    /// One page of a paginated base state was refused.
    #[error("page {page} of the base state: {source}")]
    Page {
        /// Which page, 1 for the first.
        page: usize,
        /// Why it was refused.
        source: Box<BaseError>,
    },
}

impl BaseError {
    /// The bounded label: `superseded`, `not_json`, `items`, `key`, `version`, `duplicate_key`,
    /// `too_many_entities`, `no_pages` (a page's error has the label of what was wrong with it).
    pub fn kind(&self) -> &'static str {
        match self {
            BaseError::Superseded { .. } => "superseded",
            BaseError::NotJson(_) => "not_json",
            BaseError::Items(_) => "items",
            BaseError::Key { .. } => "key",
            BaseError::Version(_) => "version",
            BaseError::DuplicateKey { .. } => "duplicate_key",
            BaseError::TooManyEntities { .. } => "too_many_entities",
            BaseError::NoPages => "no_pages",
            BaseError::Page { source, .. } => source.kind(),
        }
    }

    /// Whether fetching the base state again may help: yes for a bad document (the upstream
    /// may serve a good one next time), no for a superseded epoch (the later fetch is the one
    /// to load).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, BaseError::Superseded { .. })
    }
}

/// Why a delta was not applied. The state is unchanged and the target goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedError {
    /// The data is not JSON.
    #[error("delta is not json: {0}")]
    NotJson(String),
    /// Nothing at the key pointer.
    #[error("delta has no key at {pointer}")]
    MissingKey {
        /// The key pointer.
        pointer: String,
    },
    /// The key is not a string or an integer.
    #[error("delta key at {pointer} is not a string or an integer")]
    BadKey {
        /// The key pointer.
        pointer: String,
    },
    /// Nothing at a version pointer.
    #[error("delta has no version at {pointer}")]
    MissingVersion {
        /// The version pointer.
        pointer: String,
    },
    /// A version is not a non-negative integer (or a range's first version is above its last).
    #[error("delta version at {pointer} is not a non-negative integer or not in order")]
    BadVersion {
        /// The version pointer.
        pointer: String,
    },
    /// Nothing at the value pointer.
    #[error("delta has no value at {pointer}")]
    BadValue {
        /// The value pointer.
        pointer: String,
    },
    /// The JSON Patch does not apply to the entity.
    #[error("json patch does not apply: {0}")]
    PatchFailed(String),
    /// The data (or its value) is not an array of JSON Patch operations.
    #[error("delta is not a json patch (an array of operations)")]
    NotAPatch,
    /// A JSON Patch operation would make the entity larger than `aggregate.limits.max_entity_bytes`.
    #[error(
        "json patch operation {operation} would make the entity about {bytes} bytes (at most {max})"
    )]
    TooLarge {
        /// The operation's index in the patch.
        operation: usize,
        /// The entity's size (an upper bound) had it applied.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A JSON Patch's operations would write, copy or replace more than
    /// [`crate::EntityLimits::WORK_FACTOR`] times `aggregate.limits.max_entity_bytes` in all.
    #[error(
        "json patch operations up to {operation} would write or copy about {bytes} bytes (at most {max})"
    )]
    TooCostly {
        /// The index of the operation that passed the budget.
        operation: usize,
        /// The bytes written, copied or replaced up to it.
        bytes: usize,
        /// The budget.
        max: usize,
    },
    /// A JSON Patch operation would nest the entity deeper than `aggregate.limits.max_depth`.
    #[error(
        "json patch operation {operation} would nest the entity {depth} levels deep (at most {max})"
    )]
    TooDeep {
        /// The operation's index in the patch.
        operation: usize,
        /// The entity's depth had it applied.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The delta would add an entity to a state that holds `aggregate.max_entities` already.
    #[error("delta would add an entity past the target's {max} (aggregate.max_entities)")]
    TooManyEntities {
        /// The limit.
        max: usize,
    },
}

impl MalformedError {
    /// Every [`MalformedError::kind`].
    pub const KINDS: [&'static str; 12] = [
        "not_json",
        "missing_key",
        "bad_key",
        "missing_version",
        "bad_version",
        "bad_value",
        "patch_failed",
        "not_a_patch",
        "too_large",
        "too_costly",
        "too_deep",
        "too_many_entities",
    ];

    /// The bounded label: `not_json`, `missing_key`, `bad_key`, `missing_version`,
    /// `bad_version`, `bad_value`, `patch_failed`, `not_a_patch`, `too_large`, `too_costly`,
    /// `too_deep`, `too_many_entities`.
    pub fn kind(&self) -> &'static str {
        match self {
            MalformedError::NotJson(_) => "not_json",
            MalformedError::MissingKey { .. } => "missing_key",
            MalformedError::BadKey { .. } => "bad_key",
            MalformedError::MissingVersion { .. } => "missing_version",
            MalformedError::BadVersion { .. } => "bad_version",
            MalformedError::BadValue { .. } => "bad_value",
            MalformedError::PatchFailed(_) => "patch_failed",
            MalformedError::NotAPatch => "not_a_patch",
            MalformedError::TooLarge { .. } => "too_large",
            MalformedError::TooCostly { .. } => "too_costly",
            MalformedError::TooDeep { .. } => "too_deep",
            MalformedError::TooManyEntities { .. } => "too_many_entities",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MalformedError;

    #[test]
    fn every_malformed_kind_is_listed_once() {
        let p = || String::new();
        let all = [
            MalformedError::NotJson(p()),
            MalformedError::MissingKey { pointer: p() },
            MalformedError::BadKey { pointer: p() },
            MalformedError::MissingVersion { pointer: p() },
            MalformedError::BadVersion { pointer: p() },
            MalformedError::BadValue { pointer: p() },
            MalformedError::PatchFailed(p()),
            MalformedError::NotAPatch,
            MalformedError::TooLarge {
                operation: 0,
                bytes: 2,
                max: 1,
            },
            MalformedError::TooCostly {
                operation: 0,
                bytes: 2,
                max: 1,
            },
            MalformedError::TooDeep {
                operation: 0,
                depth: 2,
                max: 1,
            },
            MalformedError::TooManyEntities { max: 1 },
        ];
        let kinds: Vec<&str> = all.iter().map(MalformedError::kind).collect();
        assert_eq!(kinds, MalformedError::KINDS);
    }
}
