//! The delta merge: a target's REST base state plus its ordered deltas from Kafka become the exact
//! current state, by the rules of list+watch and order-book sync (buffer before the base, drop
//! at or below the snapshot version, check continuity, re-snapshot on a gap).
//!
//! Architecture invariant: pure. No I/O, no async, no clock reads; the caller fetches base states,
//! reads Kafka and keeps time.

mod spec;

pub use spec::{MergeSpec, Strategy, VersionSpec};
