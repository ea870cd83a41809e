//! The targets a worker runs, started and stopped at run time: the seam the fleet uses.
//!
//! [`Supervisor`] owns `TargetId -> handle {stop, join, status}`. Starting a target spawns its
//! task with its resume point and adds its status row to the [`Registry`] that `/metrics` and
//! `/status` read; stopping one signals it, waits until it has drained (every record Kafka
//! took answered) and its final checkpoint is acknowledged, then removes its row. Shutdown
//! stops every target through the same path.
//!
//! What it must NOT do: read checkpoints or decide which targets a worker owns (its caller
//! does), or return from a stop before the target's final checkpoint is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sluice_client::redact::redact_url;
use sluice_config::{TargetConfig, TargetId};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use sluice_publish::Resume;

use crate::Shared;
use crate::nudge::Nudge;
use crate::registry::Registry;
use crate::status::TargetStatus;
use crate::stop::StopSignal;
use crate::target::{self, HttpUpstream, Kafka, KafkaSink, Launch};

/// A running target.
struct Handle {
    stop: Arc<StopSignal>,
    join: JoinHandle<()>,
    status: Arc<TargetStatus>,
    /// The owner epoch of this run.
    epoch: u64,
    rewrite: Arc<Nudge>,
    /// Its definition, kept so a paused target can start again as it was.
    config: Arc<TargetConfig>,
}

/// Why a start or a stop was refused, or a stop did not finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The target runs already.
    #[error("target {0} is running already")]
    AlreadyRunning(TargetId),
    /// No such target runs.
    #[error("target {0} is not running")]
    NotRunning(TargetId),
    /// The target's task failed (panicked) while stopping: its final checkpoint may be missing.
    #[error("target {0} failed while stopping; its final checkpoint may not be written")]
    Failed(TargetId),
    /// The target is not paused (resume of a target that runs, or that is not defined here).
    #[error("target {0} is not paused")]
    NotPaused(TargetId),
    /// The target did not drain within the time allowed (Kafka unreachable, say).
    #[error("target {id} did not drain within {}s", .within.as_secs_f64())]
    Timeout {
        /// The target.
        id: TargetId,
        /// The time it had.
        within: Duration,
    },
    /// A checkpoint record moved at run time was not stored.
    #[error("the checkpoint of target {id} was not written: {reason}")]
    CheckpointNotWritten {
        /// The target.
        id: TargetId,
        /// Why (from the producer; no secrets).
        reason: String,
    },
    /// The worker is not running (it stopped, or has not started its targets yet).
    #[error("the worker is not running targets")]
    WorkerGone,
}

impl ControlError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlError::AlreadyRunning(_) => "already_running",
            ControlError::NotRunning(_) => "not_running",
            ControlError::NotPaused(_) => "not_paused",
            ControlError::Failed(_) => "failed",
            ControlError::Timeout { .. } => "timeout",
            ControlError::CheckpointNotWritten { .. } => "checkpoint_not_written",
            ControlError::WorkerGone => "worker_gone",
        }
    }
}

/// What a stopped target left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Its final checkpoint as Kafka stored it (`None`: it never had one).
    pub checkpoint: Option<String>,
}

/// The targets running in this worker.
pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    kafka: Arc<KafkaSink>,
    registry: Arc<Registry>,
    origin: Instant,
    running: BTreeMap<TargetId, Handle>,
    /// The epoch of each target's latest run here, so a restart in this process goes above it
    /// even when its resume point came from elsewhere.
    epochs: HashMap<TargetId, u64>,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        kafka: Arc<KafkaSink>,
        registry: Arc<Registry>,
        origin: Instant,
    ) -> Supervisor {
        Supervisor {
            shared,
            kafka,
            registry,
            origin,
            running: BTreeMap::new(),
            epochs: HashMap::new(),
        }
    }

    /// The ids of the running targets, in order.
    pub(crate) fn ids(&self) -> Vec<TargetId> {
        self.running.keys().cloned().collect()
    }

    /// The definition of a running target.
    pub(crate) fn config_of(&self, id: &TargetId) -> Option<Arc<TargetConfig>> {
        self.running.get(id).map(|h| h.config.clone())
    }

    /// The registry `/status` and `/metrics` read (a paused target keeps a row there).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// When this worker's status rows count time from.
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// Writes a checkpoint record for a target that does not run here (an operator moved its
    /// resume point), with an owner epoch above every run of it here, or its tombstone (`None`:
    /// reset, the target starts without `Last-Event-ID`); returns that epoch once Kafka stored
    /// the record (within `within`).
    pub(crate) async fn write_checkpoint(
        &mut self,
        id: &TargetId,
        event_id: Option<&str>,
        within: Duration,
    ) -> Result<u64, ControlError> {
        if self.running.contains_key(id) {
            return Err(ControlError::AlreadyRunning(id.clone()));
        }
        let epoch = self.next_epoch(id, None);
        let failed = |reason: String| ControlError::CheckpointNotWritten {
            id: id.clone(),
            reason,
        };
        let written = match event_id {
            Some(event_id) => {
                let pending = self
                    .kafka
                    .write_checkpoint(id, event_id, epoch, sluice_publish::Mark::Plain)
                    .map_err(|error| failed(error.to_string()))?;
                tokio::time::timeout(within, pending)
                    .await
                    .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
            }
            None => tokio::time::timeout(within, self.kafka.delete_checkpoint(id))
                .await
                .map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        };
        match written {
            Ok(Ok(())) => Ok(epoch),
            Ok(Err(error)) => Err(failed(error.to_string())),
            Err(_) => Err(failed(format!(
                "no answer from Kafka within {}s",
                within.as_secs_f64()
            ))),
        }
    }

    /// The owner epoch of a running target.
    pub(crate) fn epoch_of(&self, id: &TargetId) -> Option<u64> {
        self.running.get(id).map(|h| h.epoch)
    }

    /// Asks a running target to write its checkpoint again (after any write in flight).
    pub(crate) fn rewrite(&self, id: &TargetId) {
        if let Some(handle) = self.running.get(id) {
            handle.rewrite.nudge();
        }
    }

    /// Hands targets over (a planned fleet handover): each streams on, its checkpoint writes
    /// become offers (the first written at once) and its final one a release. Returns, per
    /// target offered, its stored-checkpoint count before, to see the offer stored
    /// ([`Supervisor::offers_stored`]); a target with no checkpoint has nothing to offer and
    /// is left out (and not marked).
    pub(crate) fn offer(&self, ids: &[TargetId]) -> Vec<(TargetId, u64)> {
        let mut offered = Vec::new();
        for id in ids {
            let Some(handle) = self.running.get(id) else {
                continue;
            };
            if handle.status.checkpoint().is_none_or(|c| c.is_empty()) {
                continue;
            }
            let before = handle.status.checkpoints.get();
            handle
                .status
                .handing_over
                .store(true, std::sync::atomic::Ordering::Relaxed);
            handle.rewrite.nudge();
            offered.push((id.clone(), before));
        }
        offered
    }

    /// Whether every offer of `offered` is stored (or its target stopped).
    pub(crate) fn offers_stored(&self, offered: &[(TargetId, u64)]) -> bool {
        offered.iter().all(|(id, before)| {
            self.running
                .get(id)
                .is_none_or(|h| h.status.checkpoints.get() > *before)
        })
    }

    /// Claims a target another worker offered (a planned handover): takes an epoch above
    /// every one read for it and writes the claim record (the offering worker stops when it
    /// reads it). The target is started later, with [`Supervisor::start`], from the release.
    pub(crate) fn claim(
        &mut self,
        id: &TargetId,
        resume: &Resume,
    ) -> Result<u64, sluice_publish::TrySendError> {
        let epoch = self.next_epoch(id, Some(resume));
        // The answer is not awaited: the release (or the timeout) is what the start waits for.
        drop(self.kafka.write_checkpoint(
            id,
            &resume.event_id,
            epoch,
            sluice_publish::Mark::Claim,
        )?);
        Ok(epoch)
    }

    /// Starts `config`'s target, resuming after `resume` (with an epoch above its), after
    /// `start_delay`.
    pub(crate) fn start(
        &mut self,
        config: Arc<TargetConfig>,
        resume: Option<Resume>,
        start_delay: Duration,
    ) -> Result<(), ControlError> {
        let resume_from = resume.as_ref().map(|r| r.event_id.clone());
        let status = self.prepare(&config, resume_from.as_deref())?;
        self.registry.add([status.clone()]);
        let epoch = self.next_epoch(&config.id, resume.as_ref());
        self.spawn(config, status, resume_from, start_delay, epoch);
        Ok(())
    }

    /// Above every epoch read for the target and every run of it here.
    fn next_epoch(&mut self, id: &TargetId, resume: Option<&Resume>) -> u64 {
        let read = resume.map_or(0, |r| r.epoch);
        let ran = self.epochs.get(id).copied().unwrap_or(0);
        let epoch = read.max(ran).saturating_add(1);
        self.epochs.insert(id.clone(), epoch);
        epoch
    }

    /// Starts many targets at once: the registry is rebuilt once, not once per target.
    pub(crate) fn start_all(
        &mut self,
        targets: impl IntoIterator<Item = (Arc<TargetConfig>, Option<Resume>, Duration)>,
    ) -> Result<(), ControlError> {
        let mut rows = Vec::new();
        let mut launches = Vec::new();
        for (config, resume, delay) in targets {
            let resume_from = resume.as_ref().map(|r| r.event_id.clone());
            let status = self.prepare(&config, resume_from.as_deref())?;
            rows.push(status.clone());
            launches.push((config, status, resume_from, delay, resume));
        }
        self.registry.add(rows);
        for (config, status, resume_from, delay, resume) in launches {
            let epoch = self.next_epoch(&config.id, resume.as_ref());
            self.spawn(config, status, resume_from, delay, epoch);
        }
        Ok(())
    }

    fn prepare(
        &self,
        config: &TargetConfig,
        resume_from: Option<&str>,
    ) -> Result<Arc<TargetStatus>, ControlError> {
        if self.running.contains_key(&config.id) {
            return Err(ControlError::AlreadyRunning(config.id.clone()));
        }
        let status = Arc::new(TargetStatus::new(
            config.id.clone(),
            redact_url(&config.url),
            config.topic.clone(),
            self.origin,
        ));
        if let Some(id) = resume_from {
            status.set_checkpoint(id);
            status.set_last_acked_id(id);
        }
        Ok(status)
    }

    fn spawn(
        &mut self,
        config: Arc<TargetConfig>,
        status: Arc<TargetStatus>,
        resume_from: Option<String>,
        start_delay: Duration,
        epoch: u64,
    ) {
        status
            .owner_epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
        let stop = Arc::new(StopSignal::new());
        let rewrite = Arc::new(Nudge::default());
        let launch = Launch {
            upstream: HttpUpstream::new(self.shared.clone(), config.clone()),
            kafka: self.kafka.clone(),
            config: config.clone(),
            status: status.clone(),
            resume_from,
            start_delay,
            stop: stop.clone(),
            epoch,
            rewrite: rewrite.clone(),
        };
        let join = tokio::spawn(target::run(launch));
        self.running.insert(
            config.id.clone(),
            Handle {
                stop,
                join,
                status,
                epoch,
                rewrite,
                config,
            },
        );
    }

    /// Stops one target: it stops reading, drains, and its final checkpoint is stored before
    /// this returns. Given up after `within` (the task is then aborted and nothing of what it
    /// did not checkpoint is lost: a restart reads it again).
    pub(crate) async fn stop(
        &mut self,
        id: &TargetId,
        within: Duration,
    ) -> Result<Stopped, ControlError> {
        let Some(mut handle) = self.running.remove(id) else {
            return Err(ControlError::NotRunning(id.clone()));
        };
        handle.stop.stop();
        let outcome = tokio::time::timeout(within, &mut handle.join).await;
        self.registry.remove(id);
        match outcome {
            Ok(Ok(())) => Ok(Stopped {
                checkpoint: handle.status.checkpoint(),
            }),
            Ok(Err(_)) => Err(ControlError::Failed(id.clone())),
            Err(_) => {
                handle.join.abort();
                Err(ControlError::Timeout {
                    id: id.clone(),
                    within,
                })
            }
        }
    }

    /// Stops `ids` together (each as [`Supervisor::stop`], signalled at once, joined within
    /// `within` in all); returns how many did not stop cleanly.
    pub(crate) async fn stop_many(&mut self, ids: &[TargetId], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut handles = Vec::new();
        for id in ids {
            if let Some(handle) = self.running.remove(id) {
                handle.stop.stop();
                handles.push((id, handle));
            }
        }
        let mut failed = 0;
        for (id, mut handle) in handles {
            let outcome = tokio::time::timeout_at(deadline, &mut handle.join).await;
            self.registry.remove(id);
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(target_id = %id, %error, "a target task failed while stopping");
                    failed += 1;
                }
                Err(_) => {
                    tracing::warn!(target_id = %id, "a target did not drain in time: aborted (what it did not checkpoint is read again by the next owner)");
                    handle.join.abort();
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Signals every target to stop (the first step of shutdown).
    pub(crate) fn signal_all(&self) {
        for handle in self.running.values() {
            handle.stop.stop();
        }
    }

    /// Waits, until `deadline`, for every target to finish stopping. Returns how many failed
    /// (their tasks panicked), or the number still running when the deadline passed.
    pub(crate) async fn join_all(&mut self, deadline: Instant) -> Result<usize, usize> {
        let mut failed = 0;
        for handle in self.running.values_mut() {
            match tokio::time::timeout_at(deadline, &mut handle.join).await {
                Err(_) => {
                    let left = self
                        .running
                        .values()
                        .filter(|h| !h.join.is_finished())
                        .count();
                    return Err(left);
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "a target task failed while stopping");
                    failed += 1;
                }
                Ok(Ok(())) => {}
            }
        }
        Ok(failed)
    }
}

impl Drop for Supervisor {
    /// Dropped (the worker returning or its future dropped), it aborts every target task.
    fn drop(&mut self) {
        for handle in self.running.values() {
            handle.join.abort();
        }
    }
}
