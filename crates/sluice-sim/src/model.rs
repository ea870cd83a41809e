//! The market model: deterministic deltas and the state they build.
//!
//! Delta `seq` is a pure function of `(seed, entities, seq)`, so any connection can produce or
//! replay any delta without shared memory, and a test can predict every byte the feed sends.
//! The state ([`Book`]) is what applying deltas `1..=seq` in order to an empty map gives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One delta in `DELETE_ONE_IN` is a delete; the others are price updates.
pub const DELETE_ONE_IN: u64 = 50;

/// Keys have at least this many digits (`E0001`), more when there are more entities.
const MIN_KEY_DIGITS: usize = 4;

/// One change of the feed, identified by its sequence number (which is also its version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// Upsert of one entity: `{"key":…,"price":…,"qty":…,"version":seq}`.
    PriceUpdate {
        /// Sequence number, the SSE `id` and the entity's new version.
        seq: u64,
        /// Entity index, 1-based.
        entity: u32,
        /// Price in hundredths (the JSON `price` is this divided by 100).
        price_cents: u64,
        /// Quantity.
        qty: u32,
    },
    /// Removal of one entity (a no-op when it is absent): `{"key":…,"version":seq}`.
    Delete {
        /// Sequence number, the SSE `id`.
        seq: u64,
        /// Entity index, 1-based.
        entity: u32,
    },
}

impl Delta {
    /// The sequence number of this delta.
    pub fn seq(&self) -> u64 {
        match *self {
            Delta::PriceUpdate { seq, .. } | Delta::Delete { seq, .. } => seq,
        }
    }

    /// The 1-based entity index this delta touches.
    pub fn entity(&self) -> u32 {
        match *self {
            Delta::PriceUpdate { entity, .. } | Delta::Delete { entity, .. } => entity,
        }
    }

    /// The SSE `event` name: `price_update` or `delete`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Delta::PriceUpdate { .. } => "price_update",
            Delta::Delete { .. } => "delete",
        }
    }

    /// The SSE `data` of this delta, byte for byte what the stream sends.
    pub fn to_json(&self, entities: usize) -> String {
        let mut out = Vec::with_capacity(96);
        crate::render::write_data(&mut out, self, KeyFormat::new(entities));
        String::from_utf8(out).expect("the renderer writes ascii only")
    }
}

/// How entity indices become keys (`E` and zero-padded digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFormat {
    digits: usize,
}

impl KeyFormat {
    /// The key format for a feed of `entities` entities.
    pub fn new(entities: usize) -> Self {
        let mut digits = 1;
        let mut n = entities / 10;
        while n > 0 {
            digits += 1;
            n /= 10;
        }
        KeyFormat {
            digits: digits.max(MIN_KEY_DIGITS),
        }
    }

    /// The number of digits after the `E`.
    pub fn digits(&self) -> usize {
        self.digits
    }

    /// The key of the 1-based entity `index`, e.g. `E0042`.
    pub fn key(&self, index: u32) -> String {
        format!("E{index:0width$}", width = self.digits)
    }
}

/// The key of entity `index` (1-based) in a feed of `entities` entities, e.g. `E0042`.
pub fn entity_key(index: u32, entities: usize) -> String {
    KeyFormat::new(entities).key(index)
}

/// SplitMix64 finaliser: a fast, well-mixed, stateless hash of one word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The base price of an entity in hundredths, between 10.00 and 1000.00.
fn base_price_cents(seed: u64, entity: u32) -> u64 {
    1_000 + mix(seed ^ 0x5EED_BA5E ^ mix(u64::from(entity))) % 99_000
}

/// Delta `seq` of the feed with this `seed` and number of `entities`: a pure function.
///
/// `entities` of 0 is treated as 1 (the configuration rejects it earlier).
pub fn delta(seed: u64, entities: usize, seq: u64) -> Delta {
    let entities = entities.clamp(1, u32::MAX as usize) as u64;
    let h = mix(seed ^ mix(seq));
    let entity = u32::try_from(h % entities).unwrap_or(0) + 1;
    let r = mix(h);
    if r % DELETE_ONE_IN == 0 {
        return Delta::Delete { seq, entity };
    }
    // Within ±10% of the entity's base price, so each key keeps a plausible price level.
    let swing = (r >> 8) % 2_001;
    let price_cents = base_price_cents(seed, entity) * (9_000 + swing) / 10_000;
    let qty = u32::try_from((r >> 32) % 1_000).unwrap_or(0) + 1;
    Delta::PriceUpdate {
        seq,
        entity,
        price_cents,
        qty,
    }
}

/// One entity in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Entity key, e.g. `E0042`.
    pub key: String,
    /// Last price.
    pub price: f64,
    /// Last quantity.
    pub qty: u32,
    /// Sequence number of the delta that last set this entity.
    pub version: u64,
}

/// The whole state at one version, as `GET /v1/snapshot` serves it: items sorted by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Sequence number of the last delta applied (0: none).
    pub version: u64,
    /// Present entities, sorted by key.
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    price_cents: u64,
    qty: u32,
    version: u64,
}

/// The state of all entities, built by applying deltas in order.
#[derive(Debug, Clone)]
pub struct Book {
    keys: KeyFormat,
    version: u64,
    entries: BTreeMap<u32, Entry>,
}

impl Book {
    /// An empty book (version 0) for a feed of `entities` entities.
    pub fn new(entities: usize) -> Self {
        Book {
            keys: KeyFormat::new(entities),
            version: 0,
            entries: BTreeMap::new(),
        }
    }

    /// Applies one delta; the book's version becomes the delta's sequence number.
    pub fn apply(&mut self, delta: &Delta) {
        match *delta {
            Delta::PriceUpdate {
                seq,
                entity,
                price_cents,
                qty,
            } => {
                self.entries.insert(
                    entity,
                    Entry {
                        price_cents,
                        qty,
                        version: seq,
                    },
                );
            }
            Delta::Delete { entity, .. } => {
                self.entries.remove(&entity);
            }
        }
        self.version = delta.seq();
    }

    /// Sequence number of the last delta applied (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of entities present.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entity is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state as a [`Snapshot`]. Keys are fixed-width, so index order is key order.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            items: self
                .entries
                .iter()
                .map(|(&index, entry)| Item {
                    key: self.keys.key(index),
                    price: cents_to_price(entry.price_cents),
                    qty: entry.qty,
                    version: entry.version,
                })
                .collect(),
        }
    }
}

/// Hundredths to the JSON price (the nearest `f64`, which prints back as the same decimal).
pub(crate) fn cents_to_price(cents: u64) -> f64 {
    cents as f64 / 100.0
}

/// The truth after deltas `1..=seq` of a feed: what a firehose reader has seen up to `seq`.
pub fn state_at(seed: u64, entities: usize, seq: u64) -> Snapshot {
    let mut book = Book::new(entities);
    for s in 1..=seq {
        book.apply(&delta(seed, entities, s));
    }
    book.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_a_pure_function_of_seed_and_seq() {
        for seq in 1..1_000 {
            assert_eq!(delta(7, 100, seq), delta(7, 100, seq));
        }
        let a: Vec<_> = (1..100).map(|s| delta(1, 100, s)).collect();
        let b: Vec<_> = (1..100).map(|s| delta(2, 100, s)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn deltas_touch_every_entity_and_include_some_deletes() {
        let deltas: Vec<_> = (1..=20_000).map(|s| delta(1, 100, s)).collect();
        let deletes = deltas
            .iter()
            .filter(|d| matches!(d, Delta::Delete { .. }))
            .count();
        assert!(deletes > 100 && deletes < 1_000, "deletes: {deletes}");
        for entity in 1..=100 {
            assert!(deltas.iter().any(|d| d.entity() == entity));
        }
        assert!(deltas.iter().all(|d| (1..=100).contains(&d.entity())));
    }

    #[test]
    fn keys_are_zero_padded_to_at_least_four_digits() {
        assert_eq!(entity_key(42, 100), "E0042");
        assert_eq!(entity_key(7, 123_456), "E000007");
        assert_eq!(KeyFormat::new(10_000).digits(), 5);
        assert_eq!(KeyFormat::new(9_999).digits(), 4);
    }

    #[test]
    fn data_json_parses_back_to_the_delta_fields() {
        for seq in 1..500 {
            let d = delta(3, 100, seq);
            let v: serde_json::Value = serde_json::from_str(&d.to_json(100)).expect("data is json");
            assert_eq!(v["key"], entity_key(d.entity(), 100));
            assert_eq!(v["version"], seq);
            if let Delta::PriceUpdate {
                price_cents, qty, ..
            } = d
            {
                assert_eq!(v["price"].as_f64(), Some(cents_to_price(price_cents)));
                assert_eq!(v["qty"], qty);
            } else {
                assert!(v.get("price").is_none());
            }
        }
    }

    #[test]
    fn a_deleted_entity_comes_back_with_a_later_update() {
        let mut book = Book::new(10);
        let mut came_back = false;
        let mut deleted = std::collections::HashSet::new();
        for seq in 1..5_000 {
            let d = delta(1, 10, seq);
            match d {
                Delta::Delete { entity, .. } => {
                    deleted.insert(entity);
                }
                Delta::PriceUpdate { entity, .. } => {
                    came_back |= deleted.remove(&entity);
                }
            }
            book.apply(&d);
        }
        assert!(came_back);
        assert_eq!(book.version(), 4_999);
    }
}
