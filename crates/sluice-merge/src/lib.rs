//! The delta merge: a target's REST base state plus its ordered deltas from Kafka become the exact
//! current state, by the rules of list+watch and order-book sync (buffer before the base, drop
//! at or below the snapshot version, check continuity, re-snapshot on a gap).
//!
//! Start at [`Merger`]: [`Merger::offer`] takes one Kafka record and says what it did
//! ([`Outcome`]); [`Merger::fetch_request`] and [`Merger::load_base`] bring in base states;
//! [`Merger::export`] and [`Merger::restore`] carry the state across restarts.
//!
//! Architecture invariant: pure. No I/O, no async, no clock reads; the caller fetches base states,
//! reads Kafka and keeps time.

mod base;
mod buffer;
mod dedupe;
mod entities;
mod entity;
mod error;
mod extract;
mod key;
mod limits;
mod merger;
mod outcome;
mod paths;
mod pointer;
mod snapshot;
mod spec;
mod version;

pub use entities::Entities;
pub use entity::Entity;
pub use error::{BaseError, MalformedError};
pub use merger::Merger;
pub use outcome::{BaseApplied, Change, Counts, FetchRequest, Input, Outcome, ResnapshotReason};
pub use snapshot::TargetSnapshot;
pub use spec::{EntityLimits, MergeSpec, Strategy, VersionSpec};
