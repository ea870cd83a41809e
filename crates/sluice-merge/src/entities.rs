//! One immutable version of a target's entities, in key order: what a reader, a page cursor or a
//! delivery holds while the merger goes on changing the state. Taking one is O(1) (it shares the
//! merger's persistent map); it must not offer any way to change the entities.

use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;

use crate::entity::Entity;

/// A version of the entities (see [`crate::Merger::entities_version`]). Cloning it is O(1).
#[derive(Debug, Clone, Default)]
pub struct Entities {
    map: OrdMap<Arc<str>, Entity>,
}

impl Entities {
    pub(crate) fn new(map: OrdMap<Arc<str>, Entity>) -> Entities {
        Entities { map }
    }

    /// Entities from `(key, value)` pairs (a later pair of one key wins): for tests and tools
    /// that build a state without merging one.
    pub fn from_values(pairs: impl IntoIterator<Item = (String, serde_json::Value)>) -> Entities {
        Entities {
            map: pairs
                .into_iter()
                .map(|(key, value)| (Arc::from(key), Entity::from(value)))
                .collect(),
        }
    }

    /// The number of entities.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entity `key`.
    pub fn get(&self, key: &str) -> Option<&Entity> {
        self.map.get(key)
    }

    /// Whether `other` is this very version (not merely equal: the same map, a clone of it).
    pub fn same(&self, other: &Entities) -> bool {
        self.map.ptr_eq(&other.map)
    }

    /// Every entity, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entity)> {
        self.map.iter()
    }

    /// The entities whose key starts with `prefix` and sorts after `after` (all of them with
    /// `None`), in key order. Costs O(log n) to start, then O(1) per entity.
    pub fn page<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Entity)> + 'a {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.map
            .range::<_, str>((start, Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entities(keys: &[&str]) -> Entities {
        Entities::new(
            keys.iter()
                .map(|k| (Arc::from(*k), Entity::from(json!(k))))
                .collect(),
        )
    }

    fn keys<'a>(it: impl Iterator<Item = (&'a Arc<str>, &'a Entity)>) -> Vec<&'a str> {
        it.map(|(k, _)| &**k).collect()
    }

    #[test]
    fn a_page_is_the_prefix_range_after_the_cursor_key() {
        let e = entities(&["a", "b1", "b2", "b3", "c"]);
        assert_eq!(keys(e.page("", None)), ["a", "b1", "b2", "b3", "c"]);
        assert_eq!(keys(e.page("b", None)), ["b1", "b2", "b3"]);
        assert_eq!(keys(e.page("b", Some("b1"))), ["b2", "b3"]);
        assert_eq!(keys(e.page("b", Some("a"))), ["b1", "b2", "b3"]);
        assert_eq!(keys(e.page("b", Some("b3"))), Vec::<&str>::new());
        assert_eq!(keys(e.page("", Some("b2"))), ["b3", "c"]);
        assert_eq!(keys(e.page("z", None)), Vec::<&str>::new());
    }
}
