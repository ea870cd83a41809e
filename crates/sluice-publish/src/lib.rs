//! The publishing side of Sluice: SSE events become Kafka records, and per-target checkpoints
//! (the last event id Kafka acknowledged together with every earlier one) are tracked, written to
//! and read back from a compacted topic.
//!
//! - [`CheckpointTracker`] (pure) assigns `sluice.seq` numbers and advances the checkpoint only
//!   over a fully acknowledged prefix, whatever order acknowledgements arrive in.
//! - [`build_record`] (pure) turns an [`sluice_sse::Event`] into a [`Record`]: key, value and
//!   headers.
//! - [`KafkaSettings`] builds every Sluice Kafka client's settings (connection, security and
//!   secret properties) from the config: the one Kafka client policy.
//! - [`partition_for`] and [`pool_home`] (pure): where a target lands among N partitions or
//!   proxies, the one placement function of every process.
//! - [`Publisher`] is a thin async wrapper over an idempotent rdkafka producer (`acks=all`), and
//!   [`read_checkpoints`] replays the checkpoint topic up to its high watermarks.
//! - `checkpoint_record` (pure): the checkpoint record's versioned format and owner [`Stamp`].
//!
//! What it must NOT do: HTTP, parsing SSE, reading config files, or deciding when to reconnect.
//! It takes events and validated config values from other crates and only talks to Kafka.

mod checkpoint;
pub mod checkpoint_record;
pub mod client;
mod compacted;
mod partition;
mod partitions;
mod publisher;
mod record;
pub mod topics;

pub use checkpoint::CheckpointTracker;
pub use checkpoint_record::{CHECKPOINT_FORMAT, Mark, Offer, Resume, Stamp};
pub use client::{KafkaSettings, SecretPropertyError};
pub use compacted::{
    CheckpointReadError, Checkpoints, read_checkpoints, read_checkpoints_of,
    read_compacted_blocking, read_compacted_each, read_compacted_records,
    read_compacted_records_of,
};
pub use partition::{partition_for, pool_home};
pub use partitions::PartitionsError;
pub use publisher::{Delivered, Pending, PublishError, Publisher, TrySendError};
pub use record::{
    KeyError, Record, RecordMeta, build_record, for_each_header, headers, max_record_bytes,
    record_key,
};
