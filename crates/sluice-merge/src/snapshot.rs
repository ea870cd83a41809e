//! A merger's complete state as plain data, to persist and restore after a restart.

use std::collections::BTreeMap;

use crate::entity::Entity;

/// A target's last complete merged state (see [`crate::Merger::export`] and
/// [`crate::Merger::restore`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetSnapshot {
    /// The state's version.
    pub version: Option<u64>,
    /// The change sequence.
    pub change_seq: u64,
    /// The last worker connection generation seen.
    pub last_connection: Option<u64>,
    /// The unversioned dedupe window, oldest first (empty for versioned targets).
    pub recent_ids: Vec<String>,
    /// The entities by key.
    pub entities: BTreeMap<String, Entity>,
}
