//! The worker's place in its fleet's consumer group on the checkpoint topic. The group is used
//! for ownership only: no record is consumed (every assigned partition is paused at once), no
//! offset is committed (`enable.auto.commit=false`), and owning a partition means owning the
//! targets whose checkpoints the shared partitioner puts there.
//!
//! The consumer is served by a thread of its own, where librdkafka runs the rebalance
//! callbacks. A revocation blocks that thread until the worker has stopped the partitions'
//! targets (drained, final checkpoints acknowledged), so a new owner never starts from a
//! checkpoint older than the previous owner's last one; an assignment is handed over without
//! waiting. Cooperative-sticky assignment (a rebalance moves only what must move), static
//! membership with `fleet.instance_id`, and an explicit leave when the worker stops.
//!
//! What it must NOT do: start or stop targets (the worker's loop does, on [`FleetEvent`]s), or
//! read checkpoints.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use sluice_config::{FleetGroup, GroupProtocol};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lease::Heard;

/// One poll of the consumer: how soon a stop request is seen.
const POLL: Duration = Duration::from_millis(100);
/// How long a leave waits for the revocation and the LeaveGroup.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the group did to this worker's partitions (of the checkpoint topic).
pub(crate) enum FleetEvent {
    /// These partitions are now this worker's.
    Assigned(BTreeSet<i32>),
    /// These partitions are no longer this worker's: stop their targets, then answer on `done`
    /// (the group waits for it). `lost`: the session had timed out, so another worker may run
    /// them already.
    Revoked {
        /// The partitions.
        partitions: BTreeSet<i32>,
        /// Whether they were lost rather than revoked.
        lost: bool,
        /// Answered once their targets stopped.
        done: std_mpsc::Sender<()>,
    },
}

/// The consumer's context: rebalances become [`FleetEvent`]s.
struct FleetCtx {
    events: mpsc::UnboundedSender<FleetEvent>,
    /// How long a revocation waits for the targets to stop.
    revoke_timeout: Duration,
    /// When the group coordinator last answered (the lease reads it).
    heard: Arc<Heard>,
}

impl ClientContext for FleetCtx {
    /// librdkafka's statistics, every `statistics.interval.ms`: how long the connection to the
    /// group coordinator has received nothing (heartbeat answers come every heartbeat).
    fn stats(&self, statistics: Statistics) {
        let idle = statistics
            .brokers
            .values()
            .filter(|b| b.name.starts_with("GroupCoordinator") && b.state == "UP")
            .filter_map(|b| u64::try_from(b.rxidle).ok())
            .min();
        if let Some(micros) = idle {
            self.heard.heard(Duration::from_micros(micros));
        }
    }
}

impl ConsumerContext for FleetCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions = partitions(tpl);
                let lost = consumer.assignment_lost();
                tracing::info!(
                    ?partitions,
                    lost,
                    "fleet partitions revoked: stopping their targets"
                );
                let (done, stopped) = std_mpsc::channel();
                if self
                    .events
                    .send(FleetEvent::Revoked {
                        partitions,
                        lost,
                        done,
                    })
                    .is_ok()
                    && stopped.recv_timeout(self.revoke_timeout).is_err()
                {
                    tracing::warn!(
                        timeout_ms = u64::try_from(self.revoke_timeout.as_millis()).unwrap_or(0),
                        "the revoked partitions' targets did not stop in time: giving them up anyway"
                    );
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "fleet rebalance failed"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Ownership only: nothing of the checkpoint topic is consumed through the group.
            if let Err(error) = consumer.pause(tpl) {
                tracing::warn!(%error, "cannot pause the assigned checkpoint partitions");
            }
            let partitions = partitions(tpl);
            self.heard.heard(Duration::ZERO);
            tracing::info!(?partitions, "fleet partitions assigned");
            let _ = self.events.send(FleetEvent::Assigned(partitions));
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// A worker's membership: the consumer's thread and the events it sends.
pub(crate) struct Membership {
    events: mpsc::UnboundedReceiver<FleetEvent>,
    heard: Arc<Heard>,
    leave: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The group consumer's settings over the connection settings `kafka`.
fn group_config(kafka: &ClientConfig, fleet: &FleetGroup) -> ClientConfig {
    let mut config = kafka.clone();
    let session = fleet.session_timeout.as_millis();
    config
        .set("group.id", &fleet.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The lease's view of the coordinator (see `lease.rs`).
        .set(
            "statistics.interval.ms",
            (session / 6).clamp(100, 1000).to_string(),
        );
    match fleet.group_protocol {
        GroupProtocol::Classic => {
            config
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("session.timeout.ms", session.to_string())
                .set(
                    "heartbeat.interval.ms",
                    heartbeat_interval(fleet).as_millis().to_string(),
                );
        }
        // KIP-848: the broker assigns (incrementally) and sets the session and heartbeat.
        GroupProtocol::Consumer => {
            config.set("group.protocol", "consumer");
        }
    }
    if let Some(id) = &fleet.instance_id {
        config.set("group.instance.id", id);
    }
    config
}

/// The group heartbeat's interval: a quarter of the session in a classic group; with KIP-848
/// the broker's (5 s of its default 45 s session: a ninth).
pub(crate) fn heartbeat_interval(fleet: &FleetGroup) -> Duration {
    let share = match fleet.group_protocol {
        GroupProtocol::Classic => 4,
        GroupProtocol::Consumer => 9,
    };
    (fleet.session_timeout / share).max(Duration::from_millis(100))
}

impl Membership {
    /// Joins `fleet`'s group on `topic`. A revocation waits up to `revoke_timeout` for the
    /// worker to stop its targets.
    pub(crate) fn join(
        kafka: &ClientConfig,
        fleet: &FleetGroup,
        topic: &str,
        revoke_timeout: Duration,
    ) -> Result<Membership, KafkaError> {
        let (tx, events) = mpsc::unbounded_channel();
        let heard = Arc::new(Heard::new());
        let consumer: BaseConsumer<FleetCtx> =
            group_config(kafka, fleet).create_with_context(FleetCtx {
                events: tx,
                revoke_timeout,
                heard: heard.clone(),
            })?;
        consumer.subscribe(&[topic])?;
        let leave = Arc::new(AtomicBool::new(false));
        let thread = {
            let leave = leave.clone();
            let group = fleet.group_id.clone();
            std::thread::Builder::new()
                .name("sluice-fleet".to_owned())
                .spawn(move || serve(&consumer, &leave, &group))
                .map_err(|e| KafkaError::ClientCreation(e.to_string()))?
        };
        Ok(Membership {
            events,
            heard,
            leave,
            thread: Some(thread),
        })
    }

    /// When the group coordinator last answered.
    pub(crate) fn heard(&self) -> &Heard {
        &self.heard
    }

    /// The next event (`None` once the consumer's thread ended).
    pub(crate) async fn next(&mut self) -> Option<FleetEvent> {
        self.events.recv().await
    }

    /// Asks to leave the group: the partitions are revoked (events follow, to be served as
    /// usual) and the consumer closes. [`Membership::next`] answers `None` once it has.
    pub(crate) fn leave(&self) {
        self.leave.store(true, Ordering::Relaxed);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave.store(true, Ordering::Relaxed);
        // Revocations still on their way are answered by dropping their senders.
        self.events.close();
        while self.events.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The consumer's thread: polls (heartbeats and rebalances run here) until asked to leave,
/// then unsubscribes and serves the revocation before closing.
fn serve(consumer: &BaseConsumer<FleetCtx>, leave: &AtomicBool, group: &str) {
    while !leave.load(Ordering::Relaxed) {
        if let Some(Err(error)) = consumer.poll(POLL) {
            tracing::debug!(%error, "fleet consumer");
        }
    }
    consumer.unsubscribe();
    let deadline = Instant::now() + LEAVE_TIMEOUT;
    while Instant::now() < deadline {
        let _ = consumer.poll(POLL);
        let owned = consumer.assignment().map_or(0, |tpl| tpl.count());
        if owned == 0 {
            tracing::info!(
                group,
                "left the fleet: the other workers take the targets now"
            );
            return;
        }
    }
    tracing::warn!(
        group,
        "did not leave the fleet in time: its targets wait for the session timeout"
    );
}
