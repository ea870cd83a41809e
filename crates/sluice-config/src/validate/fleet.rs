//! Validation of the worker's `fleet` section.
//!
//! What it must NOT do: contact Kafka (the partition count of an existing topic is checked by
//! the worker at start).

#[allow(clippy::wildcard_imports)]
use super::*;

use crate::fleet::{Fleet, FleetGroup, GroupProtocol};
use crate::raw::RawFleet;

/// `fleet`: absent or `none`, or a group.
pub(crate) fn fleet(c: &mut Checker<'_>, raw: Option<&RawFleet>) -> Fleet {
    let group = match raw {
        None => return Fleet::None,
        Some(RawFleet::Mode(mode)) if mode == "none" => return Fleet::None,
        Some(RawFleet::Mode(mode)) => {
            c.report(
                "fleet",
                ProblemKind::Invalid,
                format!("unknown fleet mode {mode:?}: use none, or a map with group_id"),
            );
            return Fleet::None;
        }
        Some(RawFleet::Group(group)) => group,
    };
    let group_id = match group.group_id.as_deref() {
        None => {
            c.report(
                "fleet.group_id",
                ProblemKind::Missing,
                "missing group id: the consumer group the fleet's workers share".to_owned(),
            );
            String::new()
        }
        Some(id) => {
            if !legal_kafka_name(id) {
                c.report(
                    "fleet.group_id",
                    ProblemKind::Invalid,
                    format!("bad group id {id:?}: use 1 to 249 of a-z A-Z 0-9 . _ -"),
                );
            }
            id.to_owned()
        }
    };
    let partitions = match group.partitions {
        None => FleetGroup::DEFAULT_PARTITIONS,
        Some(n) => match i32::try_from(n) {
            Ok(n) if (1..=FleetGroup::MAX_PARTITIONS).contains(&n) => n,
            _ => {
                c.report(
                    "fleet.partitions",
                    ProblemKind::Invalid,
                    format!(
                        "must be between 1 and {} (got {n}): at least the largest number of \
                         workers the fleet will run",
                        FleetGroup::MAX_PARTITIONS
                    ),
                );
                FleetGroup::DEFAULT_PARTITIONS
            }
        },
    };
    let instance_id = group.instance_id.as_deref().map(|id| {
        if !legal_kafka_name(id) {
            c.report(
                "fleet.instance_id",
                ProblemKind::Invalid,
                format!(
                    "bad instance id {id:?}: use 1 to 249 of a-z A-Z 0-9 . _ - (a StatefulSet \
                     pod name, one per running worker)"
                ),
            );
        }
        id.to_owned()
    });
    let group_protocol = match group.group_protocol.as_deref() {
        None | Some("classic") => GroupProtocol::Classic,
        Some("consumer") => GroupProtocol::Consumer,
        Some(other) => {
            c.report(
                "fleet.group_protocol",
                ProblemKind::Invalid,
                format!(
                    "unknown group protocol {other:?}: use classic, or consumer (KIP-848, Apache Kafka 4.0+)"
                ),
            );
            GroupProtocol::Classic
        }
    };
    let session_timeout = c.duration(
        "fleet.session_timeout",
        group.session_timeout.as_deref(),
        match group_protocol {
            GroupProtocol::Classic => FleetGroup::DEFAULT_SESSION_TIMEOUT,
            GroupProtocol::Consumer => FleetGroup::DEFAULT_CONSUMER_SESSION_TIMEOUT,
        },
    );
    if session_timeout < Duration::from_secs(1) || session_timeout > Duration::from_secs(300) {
        c.report(
            "fleet.session_timeout",
            ProblemKind::Invalid,
            "must be between 1s and 300s (brokers refuse sessions outside \
             group.min.session.timeout.ms, 6s by default, and group.max.session.timeout.ms)"
                .to_owned(),
        );
    }
    let handover_timeout = c.duration(
        "fleet.handover_timeout",
        group.handover_timeout.as_deref(),
        FleetGroup::DEFAULT_HANDOVER_TIMEOUT,
    );
    if handover_timeout > Duration::from_secs(300) {
        c.report(
            "fleet.handover_timeout",
            ProblemKind::Invalid,
            "must be at most 300s (0s turns make-before-break handover off)".to_owned(),
        );
    }
    Fleet::Group(FleetGroup {
        group_id,
        partitions,
        instance_id,
        session_timeout,
        handover_timeout,
        group_protocol,
    })
}
