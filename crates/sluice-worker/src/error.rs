//! The worker's error: why it could not start or did not stop cleanly.
//!
//! Each variant names what is wrong and, where an operator can fix it, how. What it must not
//! do: carry a secret (a property's value, a credential) in its message.

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::types::RDKafkaErrorCode;
use sluice_publish::{CheckpointReadError, SecretPropertyError};

use crate::MetricsError;

/// Why the worker could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The operations HTTP server could not listen.
    #[error("cannot listen on {addr} for /metrics and /status: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics registry could not be built.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The Kafka producer could not be created (bad properties).
    #[error("cannot create the kafka producer: {0}")]
    Producer(#[source] sluice_publish::PublishError),
    /// The checkpoint topic exists but is not compacted: retention would delete checkpoints.
    #[error(
        "checkpoint topic {topic} has cleanup.policy={policy}; it must be compact (kafka-configs \
         --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact), \
         or retention deletes the checkpoints of quiet targets"
    )]
    CheckpointsNotCompacted {
        /// The topic's name.
        topic: String,
        /// Its cleanup policy.
        policy: String,
    },
    /// An events topic takes smaller records than an event its targets' parsers accept would
    /// make: such an event would be refused by Kafka and stop its target.
    #[error(
        "events topic {topic} takes records up to {topic_max} bytes (max.message.bytes), but \
         target {target}'s limits accept events whose records take up to {needed} bytes; raise \
         the topic's limit (kafka-configs --alter --entity-type topics --entity-name {topic} \
         --add-config max.message.bytes={needed}) or lower the target's limits.max_event_bytes"
    )]
    EventsTopicTooSmall {
        /// The topic's name.
        topic: String,
        /// Its `max.message.bytes`.
        topic_max: u64,
        /// The largest record the target's events can make.
        needed: usize,
        /// The target needing the most.
        target: String,
    },
    /// The checkpoint topic's partition count is not the fleet's: targets would map to other
    /// partitions than the other workers think they do.
    #[error(
        "checkpoint topic {topic} has {found} partitions but fleet.partitions is {configured}; \
         the count is fixed for the topic's life: set fleet.partitions to {found}, or use a new \
         checkpoint topic"
    )]
    FleetPartitions {
        /// The topic's name.
        topic: String,
        /// Its partition count.
        found: i32,
        /// `fleet.partitions`.
        configured: i32,
    },
    /// The fleet's consumer group could not be joined (bad properties).
    #[error("cannot join the fleet's consumer group: {0}")]
    FleetJoin(#[source] rdkafka::error::KafkaError),
    /// A secret Kafka property (`kafka.secret_properties`) could not be read.
    #[error("cannot build the kafka client settings: {0}")]
    KafkaSecret(#[from] SecretPropertyError),
    /// The checkpoint topic could not be read, and retrying cannot help.
    #[error("cannot read checkpoints: {0}")]
    Checkpoints(#[source] CheckpointReadError),
    /// Target tasks ended abnormally while stopping: their final checkpoints are not written
    /// (a restart resumes from the last ones, reading their events again).
    #[error(
        "{targets} target tasks failed while stopping; their final checkpoints are not written"
    )]
    TargetsFailed {
        /// How many.
        targets: usize,
    },
    /// The producer failed fatally (librdkafka's fatal error: an idempotent producer whose
    /// producer id was refused, or that lost its guarantees): it can deliver nothing more.
    #[error("kafka producer failed fatally ({code:?}): {reason}")]
    ProducerFatal {
        /// librdkafka's code.
        code: RDKafkaErrorCode,
        /// Its description.
        reason: String,
    },
    /// The producer's final flush did not finish within the grace period.
    #[error("shutdown grace period of {grace:?} passed before the producer's final flush: {error}")]
    FlushIncomplete {
        /// The configured grace.
        grace: Duration,
        /// The producer's error.
        error: sluice_publish::PublishError,
    },
    /// `delivery.mode: exactly_once`: the transactional producers could not start.
    #[error("cannot start exactly-once delivery: {0}")]
    Transactions(#[from] crate::exactly_once::LanesError),
    /// `delivery.mode: exactly_once`: the checkpoint topic's partition count could not be read.
    #[error("cannot start exactly-once delivery: {0}")]
    TransactionPartitions(#[source] sluice_publish::PartitionsError),
    /// Shutdown did not finish within the grace period: some events read may be unacknowledged
    /// (they are not checkpointed, so a restart reads them again).
    #[error("shutdown grace period of {grace:?} passed with {targets} targets still draining")]
    GraceExceeded {
        /// The configured grace.
        grace: Duration,
        /// Targets that had not finished.
        targets: usize,
    },
}
