//! The aggregator's place in its consumer group: cooperative-sticky assignment (a rebalance
//! revokes only the partitions that move, so the targets that stay keep being served), static
//! membership when `kafka.group_instance_id` is set (a restart with the same id takes its
//! partitions back at once, without waiting for its previous run's session to time out), and an
//! explicit leave at a graceful shutdown (a static member that only closed would hold its
//! partitions, unserved, until its session timed out: a scale-in would wait for it).
//!
//! Only the group's settings and the leave live here: what an assignment or a revocation does
//! to the targets is `rebalance`'s, and this module must not touch the store.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_config::AggregatorKafka;
use tokio::time::Instant;

use crate::rebalance::Ctx;
use crate::shared::Shared;

/// How long a graceful shutdown waits for the revocation to run and the group to be left.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// One poll of the consumer while leaving.
const LEAVE_POLL: Duration = Duration::from_millis(20);

/// The consumer's group properties: `group.id`, the assignor (classic protocol) and
/// `group.instance.id` when configured.
pub fn group_properties(kafka: &AggregatorKafka) -> Vec<(&'static str, &str)> {
    let mut properties = vec![("group.id", kafka.group_id.as_str())];
    if !next_generation_protocol(kafka) {
        // KIP-848 groups assign on the broker, always incrementally; librdkafka refuses an
        // assignor there.
        properties.push(("partition.assignment.strategy", "cooperative-sticky"));
    }
    if let Some(id) = &kafka.group_instance_id {
        properties.push(("group.instance.id", id.as_str()));
    }
    properties
}

/// Whether the user chose the KIP-848 group protocol (`group.protocol=consumer`).
fn next_generation_protocol(kafka: &AggregatorKafka) -> bool {
    kafka
        .properties
        .get("group.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("consumer"))
}

/// Unsubscribes and serves the consumer until its partitions are revoked (their final
/// snapshots written and committed by `rebalance::release`) and, in a classic group, its
/// LeaveGroup is on the way (librdkafka sends one after an unsubscribe even for a static member,
/// and waits for it when the consumer closes; it sends none when a static member only closes).
/// Bounded by [`LEAVE_TIMEOUT`]; records polled meanwhile are not handled (they are after the
/// final snapshots, so the next owner replays them).
pub fn leave(shared: &Shared, consumer: &BaseConsumer<Ctx>, kafka: &AggregatorKafka) {
    consumer.unsubscribe();
    let classic = !next_generation_protocol(kafka);
    let deadline = Instant::now() + LEAVE_TIMEOUT;
    loop {
        let _ = consumer.poll(LEAVE_POLL);
        let revoked = shared.assigned().is_empty();
        if revoked && (!classic || member_id(consumer).is_none_or(|id| id.is_empty())) {
            tracing::info!(
                group = %kafka.group_id,
                instance = kafka.group_instance_id.as_deref().unwrap_or(""),
                "left the consumer group: its partitions move to the other aggregators now"
            );
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                group = %kafka.group_id,
                revoked,
                "did not leave the consumer group in time: its partitions wait for the session timeout"
            );
            return;
        }
    }
}

/// The consumer's member id in its group (empty once it has left), `None` if it has no group.
fn member_id(consumer: &BaseConsumer<Ctx>) -> Option<String> {
    let client = consumer.client().native_ptr();
    // SAFETY: the client is live for the borrow of `consumer`; librdkafka returns a copy of the
    // id (or null), which is read and then released with its own allocator.
    unsafe {
        let id = rd::rd_kafka_memberid(client);
        if id.is_null() {
            return None;
        }
        let owned = CStr::from_ptr(id).to_string_lossy().into_owned();
        rd::rd_kafka_mem_free(client, id.cast::<c_void>());
        Some(owned)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn kafka(instance: Option<&str>, properties: &[(&str, &str)]) -> AggregatorKafka {
        AggregatorKafka {
            brokers: vec!["127.0.0.1:9092".to_owned()],
            client_id: "c".to_owned(),
            group_id: "g".to_owned(),
            group_instance_id: instance.map(str::to_owned),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secret_properties: BTreeMap::new(),
        }
    }

    #[test]
    fn a_classic_group_is_cooperative_sticky_and_static_with_an_instance_id() {
        assert_eq!(
            group_properties(&kafka(Some("aggregator-0"), &[])),
            [
                ("group.id", "g"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("group.instance.id", "aggregator-0"),
            ]
        );
        assert_eq!(
            group_properties(&kafka(None, &[])),
            [
                ("group.id", "g"),
                ("partition.assignment.strategy", "cooperative-sticky"),
            ]
        );
    }

    #[test]
    fn a_kip_848_group_gets_no_assignor() {
        assert_eq!(
            group_properties(&kafka(Some("a-1"), &[("group.protocol", "consumer")])),
            [("group.id", "g"), ("group.instance.id", "a-1")]
        );
    }
}
