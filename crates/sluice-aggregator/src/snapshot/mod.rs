//! Snapshots: the record format and its atomic file (`record`), the chunked format for a
//! snapshot larger than one record may be (`chunks`), the round that writes every synced
//! target's snapshot and then commits each partition's safe offset (`round`), writing a
//! round's records in the order the format needs (`write`), reading them back at an
//! assignment (`stored`), and the producer context that collects the acknowledgements
//! (`deliveries`).
//!
//! A round must never commit past a snapshot Kafka has not acknowledged, and never writes a
//! target that is not synced. It does not decide when rounds happen (the loop and the
//! revocation do).

mod chunks;
mod deliveries;
mod record;
mod round;
mod stored;
mod write;

pub use chunks::{ASSUMED_RECORD_LIMIT, Head, chunk_limit};
pub use deliveries::Deliveries;
pub use record::SnapshotRecord;
pub use round::snapshot_round;
pub use stored::{Found, StateTable};
