//! The recent-id window of an unversioned target: the last `n` applied `sse.id`s, oldest first,
//! as a ring for eviction and a set for lookup.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The last `capacity` remembered ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdWindow {
    capacity: usize,
    ring: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl IdWindow {
    /// An empty window of `capacity` ids (0: remembers nothing).
    pub(crate) fn new(capacity: usize) -> IdWindow {
        IdWindow {
            capacity,
            ring: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// A window of `capacity` holding the newest of `ids` (oldest first).
    pub(crate) fn with_ids(capacity: usize, ids: &[String]) -> IdWindow {
        let mut window = IdWindow::new(capacity);
        for id in ids {
            window.remember(id);
        }
        window
    }

    /// Whether `id` is in the window.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Adds `id` (evicting the oldest when full); an id already present stays where it is.
    pub(crate) fn remember(&mut self, id: &str) {
        if self.capacity == 0 || self.set.contains(id) {
            return;
        }
        if self.ring.len() == self.capacity
            && let Some(oldest) = self.ring.pop_front()
        {
            self.set.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.ring.push_back(Arc::clone(&id));
        self.set.insert(id);
    }

    /// The ids, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.ring.iter().map(|id| id.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::IdWindow;

    #[test]
    fn the_oldest_id_leaves_a_full_window() {
        let mut window = IdWindow::new(2);
        window.remember("a");
        window.remember("b");
        window.remember("a");
        window.remember("c");
        assert!(!window.contains("a"));
        assert!(window.contains("b") && window.contains("c"));
        assert_eq!(window.to_vec(), ["b", "c"]);
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut window = IdWindow::new(0);
        window.remember("a");
        assert!(!window.contains("a"));
        assert!(window.to_vec().is_empty());
    }

    #[test]
    fn a_restored_window_keeps_the_newest_ids() {
        let ids = ["1", "2", "3"].map(String::from);
        let window = IdWindow::with_ids(2, &ids);
        assert_eq!(window.to_vec(), ["2", "3"]);
    }
}
