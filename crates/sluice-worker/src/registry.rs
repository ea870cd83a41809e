//! The status rows of the targets a worker runs now, as `/metrics` and `/status` read them, and
//! the counters of the targets that stopped (for the process-wide totals).
//!
//! Copy-on-write: the supervisor replaces the list when a target starts or stops; a reader
//! takes the current list (one `Arc` clone) and never holds a lock while it renders.
//!
//! What it must NOT do: start or stop anything (the supervisor does), or hand out a list a
//! writer can change under a reader.

use std::sync::{Arc, RwLock};

use sluice_config::TargetId;

use crate::status::TargetStatus;
use crate::totals::Sums;

/// The targets running now, in the order they started.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    rows: Arc<Vec<Arc<TargetStatus>>>,
    /// Counters of the rows removed so far.
    retired: Sums,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rows now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<TargetStatus>>> {
        self.read().rows.clone()
    }

    /// The rows now and the counters of the rows removed before (taken together: a removed row
    /// is in exactly one of them).
    pub(crate) fn snapshot_with_retired(&self) -> (Arc<Vec<Arc<TargetStatus>>>, Sums) {
        let inner = self.read();
        (inner.rows.clone(), inner.retired.clone())
    }

    /// Adds rows (targets that started; public for benchmarks and tools that render metrics of
    /// synthetic rows).
    pub fn add(&self, rows: impl IntoIterator<Item = Arc<TargetStatus>>) {
        let mut inner = self.write();
        let mut next: Vec<Arc<TargetStatus>> = inner.rows.as_ref().clone();
        next.extend(rows);
        inner.rows = Arc::new(next);
    }

    /// Removes the row of `id` (a target that stopped), keeping its counters in the totals.
    pub(crate) fn remove(&self, id: &TargetId) {
        let mut inner = self.write();
        let (gone, next): (Vec<Arc<TargetStatus>>, Vec<Arc<TargetStatus>>) =
            inner.rows.iter().cloned().partition(|row| row.id == *id);
        for row in &gone {
            inner.retired.retire(row);
        }
        inner.rows = Arc::new(next);
    }
}
