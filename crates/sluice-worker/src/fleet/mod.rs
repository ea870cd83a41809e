//! Fleet ownership (`fleet: {group_id, …}`): the workers of one group share the targets their
//! files list. A target belongs to the checkpoint partition its id maps to (the shared
//! partitioner), so the partitions the group assigns a worker name the targets it runs; on an
//! assignment their resume points are read from the checkpoint topic (to its end, which holds
//! the previous owner's final checkpoints: a revocation returns only once those are stored), and
//! on a revocation they are stopped, drained and checkpointed before the group moves them, or,
//! in a planned rebalance, handed over make-before-break (`handover.rs`).
//!
//! What it must NOT do: run a target whose partition it was not assigned, or answer a
//! revocation before the targets of its partitions have stopped.

mod handover;
mod lease;
mod leave;
mod membership;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use sluice_config::{FleetGroup, TargetConfig, TargetId};
use sluice_publish::partition_for;
use tokio_util::sync::CancellationToken;

pub(crate) use lease::Heard;
pub(crate) use leave::{Leave, leave_fleet};
pub(crate) use membership::{FleetEvent, Membership};

use crate::supervisor::Supervisor;
use crate::{WorkerError, http, startup};

/// The targets this worker may run, and which of them its partitions own.
pub(crate) struct Ownership {
    group: FleetGroup,
    /// Every enabled target of the worker's files.
    targets: BTreeMap<TargetId, Arc<TargetConfig>>,
    /// The checkpoint partitions this worker owns.
    owned: BTreeSet<i32>,
    /// Stops the owned partitions' targets when the coordinator has been silent too long.
    lease: lease::Lease,
    /// The origin of the lease's clock.
    origin: tokio::time::Instant,
    /// Targets handed over from here and claimed here (planned rebalances).
    handover: handover::Handover,
    /// This worker process, as its checkpoint records name it.
    own: Arc<str>,
    /// Targets paused here at run time: an assignment (or a renewed lease) does not start them.
    paused: BTreeSet<TargetId>,
}

impl Ownership {
    /// Nothing owned yet, over every enabled target.
    pub(crate) fn new(
        group: FleetGroup,
        targets: Vec<Arc<TargetConfig>>,
        own: Arc<str>,
    ) -> Ownership {
        let lease = lease::Lease::new(
            group.session_timeout,
            membership::heartbeat_interval(&group),
        );
        Ownership {
            group,
            targets: targets.into_iter().map(|t| (t.id.clone(), t)).collect(),
            owned: BTreeSet::new(),
            lease,
            origin: tokio::time::Instant::now(),
            handover: handover::Handover::default(),
            own,
            paused: BTreeSet::new(),
        }
    }

    /// The targets paused here now (kept out of the starts of assignments).
    pub(crate) fn set_paused(&mut self, paused: BTreeSet<TargetId>) {
        self.paused = paused;
    }

    /// Whether `id`'s checkpoint partition is one of `partitions`.
    pub(crate) fn in_partitions(&self, id: &TargetId, partitions: &BTreeSet<i32>) -> bool {
        partitions.contains(&self.partition_of(id))
    }

    /// Takes a new or changed definition; whether this worker runs it now (its partition is
    /// owned here under a valid lease, and no handover of it is going on).
    pub(crate) fn define(&mut self, target: Arc<TargetConfig>) -> bool {
        let id = target.id.clone();
        self.targets.insert(id.clone(), target);
        self.owned.contains(&self.partition_of(&id))
            && !self.lease.is_expired()
            && !self.handover.is_claimed(&id)
    }

    /// Records the targets defined now for the fleet view and gauges (after definitions
    /// changed).
    pub(crate) fn publish_targets(&self, ops: &http::Ops) {
        publish_targets(
            ops,
            self.targets.keys().map(TargetId::as_str),
            self.group.partitions,
        );
        let owned = self
            .targets
            .keys()
            .filter(|id| self.owned.contains(&self.partition_of(id)))
            .count();
        ops.metrics.fleet.owned(self.owned.len(), owned);
    }

    /// Forgets a removed definition.
    pub(crate) fn undefine(&mut self, id: &TargetId) {
        self.targets.remove(id);
    }

    /// The checkpoint partitions of `ids`.
    pub(crate) fn partitions_of<'a>(
        &self,
        ids: impl Iterator<Item = &'a TargetId>,
    ) -> BTreeSet<i32> {
        ids.map(|id| self.partition_of(id)).collect()
    }

    /// Whether targets are still streaming here for a handover.
    pub(crate) fn offering(&self) -> bool {
        self.handover.offering()
    }

    /// Acts on checkpoint records other workers wrote that are part of a handover with this
    /// worker, taking them out of `landed` (the rest are served as usual).
    pub(crate) async fn landed(
        &mut self,
        landed: &mut Vec<crate::watch::Landed>,
        supervisor: &mut Supervisor,
        grace: Duration,
    ) {
        self.handover.landed(landed, supervisor, grace).await;
    }

    /// Ends handovers past `fleet.handover_timeout` (on the lease's tick).
    pub(crate) async fn expire_handovers(&mut self, supervisor: &mut Supervisor, grace: Duration) {
        let may_start = !self.lease.is_expired();
        self.handover.expire(supervisor, grace, may_start).await;
    }

    /// Whether a planned revocation hands over (rather than stopping first). Leaving too, a
    /// static member's: the leave unsubscribes, and librdkafka sends a LeaveGroup after an
    /// unsubscribe even for a static member, so the group moves its partitions at once.
    fn hands_over(&self, lost: bool) -> bool {
        !(lost || self.group.handover_timeout.is_zero())
    }

    /// The checkpoint partition `id` belongs to.
    fn partition_of(&self, id: &TargetId) -> i32 {
        partition_for(id.as_str(), self.group.partitions)
    }

    /// The partitions owned now.
    pub(crate) fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// Carries out one event of the group. `Ok(false)` when shutdown came while reading
    /// checkpoints.
    pub(crate) async fn serve(
        &mut self,
        event: FleetEvent,
        supervisor: &mut Supervisor,
        ctx: &Ctx<'_>,
    ) -> Result<bool, WorkerError> {
        match event {
            FleetEvent::Assigned(partitions) => {
                // The coordinator answered: the lease holds again, and partitions whose
                // targets an expired lease stopped are still this worker's.
                let partitions = if self.lease.is_expired() {
                    partitions.union(&self.owned).copied().collect()
                } else {
                    partitions
                };
                self.lease.granted();
                ctx.ops.metrics.fleet.rebalanced();
                let served = self.assigned(partitions, supervisor, ctx).await;
                self.record_owned(ctx);
                served
            }
            FleetEvent::Revoked {
                partitions,
                lost,
                done,
            } => {
                self.revoked(&partitions, lost, supervisor, ctx.grace).await;
                ctx.ops.metrics.fleet.rebalanced();
                self.record_owned(ctx);
                let _ = done.send(());
                Ok(true)
            }
        }
    }

    /// One check of the lease (see `lease.rs`): stops the owned partitions' targets when the
    /// coordinator has been silent too long, starts them again once it answers again.
    /// `Ok(false)` when shutdown came while reading checkpoints.
    pub(crate) async fn check_lease(
        &mut self,
        heard: &Heard,
        supervisor: &mut Supervisor,
        ctx: &Ctx<'_>,
    ) -> Result<bool, WorkerError> {
        let silent = heard.silent_for();
        let step = self
            .lease
            .step(self.origin.elapsed(), silent, !self.owned.is_empty());
        match step {
            lease::Step::Keep => Ok(true),
            lease::Step::Expire => {
                let offered: BTreeSet<TargetId> = self.handover.offered().cloned().collect();
                let leaving: Vec<TargetId> = supervisor
                    .ids()
                    .into_iter()
                    .filter(|id| {
                        self.owned.contains(&self.partition_of(id)) || offered.contains(id)
                    })
                    .collect();
                tracing::warn!(
                    silent_ms = silent.map_or(0, |s| u64::try_from(s.as_millis()).unwrap_or(u64::MAX)),
                    lease_ms = u64::try_from(self.lease.length().as_millis()).unwrap_or(u64::MAX),
                    partitions = ?self.owned,
                    targets = leaving.len(),
                    "fleet lease expired: the group coordinator has not answered for most of the session; stopping the owned partitions' targets before the group can give them away"
                );
                let failed = supervisor.stop_many(&leaving, ctx.grace).await;
                tracing::info!(failed, "targets of the expired lease stopped");
                Ok(true)
            }
            lease::Step::Renew => {
                tracing::info!(
                    partitions = ?self.owned,
                    "fleet lease renewed: the group coordinator answers again and no revocation came; starting the owned partitions' targets again"
                );
                let owned = self.owned.clone();
                self.assigned(owned, supervisor, ctx).await
            }
        }
    }

    /// The owned partitions and their targets, in the fleet's gauges.
    fn record_owned(&self, ctx: &Ctx<'_>) {
        let targets = self
            .targets
            .keys()
            .filter(|id| self.owned.contains(&self.partition_of(id)))
            .count();
        ctx.ops.metrics.fleet.owned(self.owned.len(), targets);
    }

    async fn assigned(
        &mut self,
        partitions: BTreeSet<i32>,
        supervisor: &mut Supervisor,
        ctx: &Ctx<'_>,
    ) -> Result<bool, WorkerError> {
        let since = tokio::time::Instant::now();
        self.owned.extend(partitions.iter().copied());
        // Targets offered from here whose partitions came back before a claim: stopped (their
        // release written) and started again below like every target of the partitions.
        let back = self.handover.take_offered(|id| {
            partitions.contains(&partition_for(id.as_str(), self.group.partitions))
        });
        if !back.is_empty() {
            supervisor.stop_many(&back, ctx.grace).await;
        }
        let moving: Vec<Arc<TargetConfig>> = self
            .targets
            .values()
            .filter(|t| partitions.contains(&self.partition_of(&t.id)))
            .cloned()
            .collect();
        if moving.is_empty() {
            return Ok(true);
        }
        // Read now, not at start: the previous owner's final checkpoints were stored before
        // the group gave these partitions here.
        let read_started = tokio::time::Instant::now();
        let Some(checkpoints) = startup::load_checkpoints(
            ctx.kafka,
            ctx.topic,
            Some(&partitions),
            ctx.ops,
            ctx.shutdown,
        )
        .await?
        else {
            return Ok(false);
        };
        ctx.ops
            .metrics
            .fleet
            .assignment_read(read_started.elapsed());
        tracing::debug!(
            ?partitions,
            read_ms = u64::try_from(read_started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "assigned checkpoint partitions read to their ends"
        );
        let running: BTreeSet<TargetId> = supervisor.ids().into_iter().collect();
        let hand_over = self.hands_over(false);
        let mut claimed = Vec::new();
        let mut launches = Vec::new();
        for t in moving {
            if running.contains(&t.id)
                || self.handover.is_claimed(&t.id)
                || self.paused.contains(&t.id)
            {
                continue;
            }
            let resume = checkpoints.resume.get(t.id.as_str()).cloned();
            // Another worker streams it still, waiting for a claim: claim it, and start it
            // from that worker's release.
            if let Some(resume) = resume.clone().filter(|r| {
                hand_over && r.offered_by.as_ref().is_some_and(|o| *o.owner != *self.own)
            }) {
                let timeout = self.group.handover_timeout;
                if self.handover.claim(t.clone(), resume, supervisor, timeout) {
                    claimed.push(t.id.clone());
                    continue;
                }
            }
            launches.push((t, resume, Duration::ZERO));
        }
        tracing::info!(
            ?partitions,
            targets = launches.len(),
            claimed = claimed.len(),
            "starting the targets of assigned fleet partitions (claimed ones start at their release)"
        );
        // Claimed targets are timed too: from the assignment to their first event here.
        let ids = launches
            .iter()
            .map(|(t, _, _)| t.id.clone())
            .chain(claimed)
            .collect();
        ctx.ops
            .metrics
            .fleet
            .handing_over(ids, since, ctx.ops.targets.clone());
        if let Err(error) = supervisor.start_all(launches) {
            tracing::error!(%error, "a target of an assigned partition runs already");
        }
        Ok(true)
    }

    async fn revoked(
        &mut self,
        partitions: &BTreeSet<i32>,
        lost: bool,
        supervisor: &mut Supervisor,
        grace: Duration,
    ) {
        for partition in partitions {
            self.owned.remove(partition);
        }
        let group_partitions = self.group.partitions;
        self.handover
            .drop_claims(|id| partitions.contains(&partition_for(id.as_str(), group_partitions)));
        let mut leaving: Vec<TargetId> = supervisor
            .ids()
            .into_iter()
            .filter(|id| partitions.contains(&self.partition_of(id)))
            .collect();
        if self.hands_over(lost) && !leaving.is_empty() {
            let offered = leaving.len();
            leaving = self
                .handover
                .offer(leaving, supervisor, self.group.handover_timeout)
                .await;
            tracing::info!(
                ?partitions,
                targets = offered - leaving.len(),
                "handing over the revoked partitions' targets: they stream on until their new owner claims them"
            );
            if leaving.is_empty() {
                return;
            }
        }
        if lost {
            tracing::warn!(
                ?partitions,
                targets = leaving.len(),
                "fleet partitions lost (the group session timed out): stopping their targets; the new owner may have started them already (duplicates, never loss)"
            );
        }
        let failed = supervisor.stop_many(&leaving, grace).await;
        tracing::info!(
            ?partitions,
            targets = leaving.len(),
            failed,
            "targets of revoked fleet partitions stopped and checkpointed"
        );
    }
}

/// Records the fleet's targets (`ids`) for the fleet view and the targets gauge.
pub(crate) fn publish_targets<'a>(
    ops: &http::Ops,
    ids: impl Iterator<Item = &'a str>,
    partitions: i32,
) {
    let target_partitions: Vec<i32> = ids.map(|id| partition_for(id, partitions)).collect();
    ops.metrics
        .fleet
        .targets
        .set(i64::try_from(target_partitions.len()).unwrap_or(i64::MAX));
    *ops.fleet_targets
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = target_partitions;
}

/// What serving an event needs of the worker.
pub(crate) struct Ctx<'a> {
    pub(crate) kafka: &'a ClientConfig,
    pub(crate) topic: &'a str,
    pub(crate) ops: &'a http::Ops,
    pub(crate) shutdown: &'a CancellationToken,
    pub(crate) grace: Duration,
}

/// Makes sure the checkpoint topic exists with the fleet's partition count (created so,
/// compacted, when missing), and refuses one with another count: the partitioner would map
/// targets to other partitions than the other workers think.
pub(crate) async fn prepare_topic(
    kafka: &ClientConfig,
    topic: &str,
    group: &FleetGroup,
    ops: &http::Ops,
    shutdown: &CancellationToken,
) -> Result<bool, WorkerError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let count = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            count = sluice_publish::topics::partition_count(kafka, topic) => count,
        };
        match count {
            Ok(found) if found == group.partitions => return Ok(true),
            Ok(found) => {
                return Err(WorkerError::FleetPartitions {
                    topic: topic.to_owned(),
                    found,
                    configured: group.partitions,
                });
            }
            Err(sluice_publish::PartitionsError::TopicMissing { .. }) => {
                let created = sluice_publish::topics::create_topic_partitioned(
                    kafka,
                    topic,
                    group.partitions,
                    true,
                    &[],
                )
                .await;
                if let Err(error) = created {
                    tracing::warn!(%error, topic, "cannot create the fleet's checkpoint topic yet");
                }
            }
            Err(error) => {
                tracing::warn!(%error, kind = error.kind(), topic, "cannot read the checkpoint topic's partition count yet");
                ops.set_not_ready_reason(format!("cannot read the checkpoint topic yet: {error}"));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
