//! The status rows of the targets a worker runs now, as `/metrics` and `/status` read them.
//!
//! Copy-on-write: the supervisor replaces the list when a target starts or stops; a reader
//! takes the current list (one `Arc` clone) and never holds a lock while it renders.
//!
//! What it must NOT do: start or stop anything (the supervisor does), or hand out a list a
//! writer can change under a reader.

use std::sync::{Arc, RwLock};

use sluice_config::TargetId;

use crate::status::TargetStatus;

/// The targets running now, in the order they started.
#[derive(Default)]
pub struct Registry {
    rows: RwLock<Arc<Vec<Arc<TargetStatus>>>>,
}

impl Registry {
    /// The rows now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<TargetStatus>>> {
        self.rows
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adds rows (targets that started).
    pub(crate) fn add(&self, rows: impl IntoIterator<Item = Arc<TargetStatus>>) {
        let mut guard = self
            .rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: Vec<Arc<TargetStatus>> = guard.as_ref().clone();
        next.extend(rows);
        *guard = Arc::new(next);
    }

    /// Removes the row of `id` (a target that stopped).
    pub(crate) fn remove(&self, id: &TargetId) {
        let mut guard = self
            .rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next: Vec<Arc<TargetStatus>> =
            guard.iter().filter(|row| row.id != *id).cloned().collect();
        *guard = Arc::new(next);
    }
}
