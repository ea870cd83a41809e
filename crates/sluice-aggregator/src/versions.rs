//! Immutable versions of a target's state as readers see them: [`StateView`] (the entities as a
//! persistent map's version, with the version, change sequence and Kafka position they reflect)
//! and [`Pins`], the bounded set of versions that page cursors still read. Taking a version
//! costs O(1) under the cell's lock; nothing here may hold that lock while reading or writing a
//! version.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::ser::{SerializeMap, Serializer};
use sluice_merge::Entities;

use crate::store::Inner;

/// Versions kept per target for page cursors: the last this many a first page was served from
/// (one more, and the oldest one's cursors answer 410 "version expired").
pub const PINNED_VERSIONS: usize = 16;

/// One immutable version of a target's state. Cloning it is O(1).
#[derive(Clone)]
pub struct StateView {
    target: Arc<str>,
    /// The state's version (`None`: unversioned, or a base without one).
    pub version: Option<u64>,
    /// The change sequence: +1 per applied delta and per base state loaded.
    pub change_seq: u64,
    /// Synced (no re-snapshot pending).
    pub synced: bool,
    /// When the state last changed.
    pub changed_at: SystemTime,
    /// The events partition of the target.
    pub partition: i32,
    /// Every record of `partition` below this offset is reflected in the state.
    pub next_offset: i64,
    /// The entities.
    pub entities: Entities,
}

impl StateView {
    /// The version of `inner`'s state (the caller holds its lock for this O(1) call only).
    pub fn capture(target: &str, inner: &Inner) -> StateView {
        StateView {
            target: Arc::from(target),
            version: inner.merger.version(),
            change_seq: inner.merger.change_seq(),
            synced: inner.merger.is_synced(),
            changed_at: inner.changed_at,
            partition: inner.partition,
            next_offset: inner.next_offset,
            entities: inner.merger.entities_version(),
        }
    }

    /// The change sequence the state is at.
    pub fn change_seq(&self) -> u64 {
        self.change_seq
    }

    /// The target id.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The entity tag of this version: its version and change sequence.
    pub fn etag(&self) -> String {
        match self.version {
            Some(version) => format!("\"v{version}-s{}\"", self.change_seq),
            None => format!("\"s{}\"", self.change_seq),
        }
    }

    /// The time of the last change, RFC 3339.
    pub fn as_of(&self) -> String {
        humantime::format_rfc3339_millis(self.changed_at).to_string()
    }

    /// The Kafka position as a JSON object: `{"partition", "next_offset"}`.
    pub fn kafka(&self) -> serde_json::Value {
        serde_json::json!({ "partition": self.partition, "next_offset": self.next_offset })
    }

    /// The state as JSON: `{"target", "version", "change_seq", "synced", "as_of", "kafka",
    /// "entities": {key: entity, ...}}`, entities in key order. CPU-bound in the state's size:
    /// run it off the async workers (`spawn_blocking`).
    pub fn into_json(self) -> Vec<u8> {
        struct All<'a>(&'a Entities);
        impl serde::Serialize for All<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (key, value) in self.0.iter() {
                    map.serialize_entry(&**key, value)?;
                }
                map.end()
            }
        }
        #[derive(serde::Serialize)]
        struct View<'a> {
            target: &'a str,
            version: Option<u64>,
            change_seq: u64,
            synced: bool,
            as_of: String,
            kafka: serde_json::Value,
            entities: All<'a>,
        }
        let view = View {
            target: &self.target,
            version: self.version,
            change_seq: self.change_seq,
            synced: self.synced,
            as_of: self.as_of(),
            kafka: self.kafka(),
            entities: All(&self.entities),
        };
        serde_json::to_vec(&view).unwrap_or_default()
    }
}

/// The versions of one target that page cursors read, newest last, at most
/// [`PINNED_VERSIONS`]. Only readers lock it.
#[derive(Default)]
pub struct Pins {
    inner: Mutex<PinsInner>,
}

#[derive(Default)]
struct PinsInner {
    next_id: u64,
    kept: VecDeque<(u64, Arc<StateView>)>,
}

impl Pins {
    /// Keeps `view` for cursors and returns its pin id (a version already kept, the same
    /// state, keeps its id); the oldest kept version goes when there are too many.
    pub fn pin(&self, view: &StateView) -> u64 {
        let mut pins = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let same = pins.kept.iter().find(|(_, kept)| {
            kept.change_seq == view.change_seq
                && kept.next_offset == view.next_offset
                && kept.entities.same(&view.entities)
        });
        if let Some((id, _)) = same {
            return *id;
        }
        pins.next_id += 1;
        let id = pins.next_id;
        if pins.kept.len() == PINNED_VERSIONS {
            pins.kept.pop_front();
        }
        pins.kept.push_back((id, Arc::new(view.clone())));
        id
    }

    /// The version pinned as `id`, if still kept.
    pub fn get(&self, id: u64) -> Option<Arc<StateView>> {
        let pins = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        pins.kept
            .iter()
            .find(|(kept, _)| *kept == id)
            .map(|(_, view)| Arc::clone(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(change_seq: u64) -> StateView {
        StateView {
            target: Arc::from("t"),
            version: Some(change_seq),
            change_seq,
            synced: true,
            changed_at: SystemTime::UNIX_EPOCH,
            partition: 0,
            next_offset: 0,
            entities: Entities::default(),
        }
    }

    #[test]
    fn the_same_state_keeps_its_pin_and_the_oldest_goes_past_the_bound() {
        let pins = Pins::default();
        let first = view(1);
        let id = pins.pin(&first);
        assert_eq!(
            pins.pin(&first.clone()),
            id,
            "the same version, the same pin"
        );
        let ids: Vec<u64> = (2..=PINNED_VERSIONS as u64)
            .map(|seq| pins.pin(&view(seq)))
            .collect();
        assert!(!ids.contains(&id));
        assert_eq!(pins.get(id).map(|v| v.change_seq), Some(1), "16 kept");
        let newest = pins.pin(&view(100));
        assert!(pins.get(id).is_none(), "the 17th made the oldest go");
        assert_eq!(pins.get(ids[0]).map(|v| v.change_seq), Some(2));
        assert_eq!(pins.get(newest).map(|v| v.change_seq), Some(100));
        assert!(pins.get(newest + 1).is_none());
    }
}
