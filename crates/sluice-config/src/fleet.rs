//! `fleet`: whether a worker runs every target its files list (`none`, the default) or shares
//! them with the other workers of a consumer group on the checkpoint topic.
//!
//! What it must NOT do: hold anything but validated settings; the membership itself is the
//! worker's.

use std::time::Duration;

/// How a worker shares its targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fleet {
    /// Every enabled target of the worker's files runs here.
    #[default]
    None,
    /// The workers of one group share the targets: each runs those whose checkpoint partition
    /// it is assigned.
    Group(FleetGroup),
}

/// `fleet: {group_id, …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetGroup {
    /// The consumer group the fleet's workers join on the checkpoint topic.
    pub group_id: String,
    /// The checkpoint topic's partition count: the most workers that can own targets at once.
    /// Fixed for the topic's life (a worker refuses a topic with another count).
    pub partitions: i32,
    /// `group.instance.id` (static membership): a restart with the same id takes its partitions
    /// back without a rebalance. One per worker (a StatefulSet pod name).
    pub instance_id: Option<String>,
    /// `session.timeout.ms`: how long a silent worker keeps its targets before the group gives
    /// them to the others.
    pub session_timeout: Duration,
    /// A planned handover's bound (`0s`: none, the old owner stops before the new one starts):
    /// how long a worker whose partition was revoked streams its targets on waiting for the new
    /// owner's claim, and how long the new owner waits for the old one's release.
    pub handover_timeout: Duration,
    /// The group protocol: the classic one (the default) or KIP-848's.
    pub group_protocol: GroupProtocol,
}

/// `fleet.group_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol with cooperative-sticky assignment (every broker, Redpanda too).
    #[default]
    Classic,
    /// KIP-848 (`group.protocol=consumer`, Apache Kafka 4.0+): the broker assigns, and the
    /// session and heartbeat are the broker's (`group.consumer.session.timeout.ms`, 45 s by
    /// default: `fleet.session_timeout` must equal it, for the lease).
    Consumer,
}

impl FleetGroup {
    /// Default [`FleetGroup::partitions`].
    pub const DEFAULT_PARTITIONS: i32 = 12;
    /// The most [`FleetGroup::partitions`] accepted.
    pub const MAX_PARTITIONS: i32 = 10_000;
    /// Default [`FleetGroup::session_timeout`].
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`FleetGroup::session_timeout`] with [`GroupProtocol::Consumer`]: the broker's
    /// default `group.consumer.session.timeout.ms`.
    pub const DEFAULT_CONSUMER_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
    /// Default [`FleetGroup::handover_timeout`].
    pub const DEFAULT_HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
}
