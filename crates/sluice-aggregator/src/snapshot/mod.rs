//! Snapshots: the record format and its atomic file (`record`), the round that writes every
//! synced target's snapshot and then commits each partition's safe offset (`round`), and the
//! producer context that collects the round's acknowledgements (`deliveries`).
//!
//! A round must never commit past a snapshot Kafka has not acknowledged, and never writes a
//! target that is not synced. It does not decide when rounds happen (the loop and the
//! revocation do).

mod deliveries;
mod record;
mod round;

pub use deliveries::Deliveries;
pub use record::SnapshotRecord;
pub use round::snapshot_round;
