//! Make-before-break handover of a fleet's targets between two workers, when the group moves
//! a partition in a planned rebalance (scale-out, scale-in, a dynamic member leaving).
//!
//! The group gives no overlap: the new owner is assigned a partition only after the old one
//! let it go. So the old owner does not stop the partition's targets when it is revoked: it
//! marks their checkpoints as offers (stored before it answers the revocation, so the new
//! owner's read sees them) and streams on. The new owner, finding an open offer where it reads
//! a target's resume point, writes a claim (a checkpoint record with its higher epoch) instead
//! of connecting; the old owner, following the checkpoint topic, stops the target when the
//! claim lands, and its final checkpoint is the release. The new owner starts from the release:
//! nothing the old owner published is published again, with any ids, and the target is dark
//! only from the old owner's stop to the new owner's first event. Either side gives up after
//! `fleet.handover_timeout`: an old owner that saw no claim stops (its final checkpoint
//! stands); a new owner that saw no release starts from the newest checkpoint it read.
//!
//! What it must NOT do: start a claimed target before the release or the timeout, keep a
//! revoked target running past the timeout, or act on a target it neither hands over nor
//! claims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_config::{TargetConfig, TargetId};
use sluice_publish::{Mark, Resume};
use tokio::time::Instant;

use crate::supervisor::Supervisor;
use crate::watch::Landed;

/// How long a revocation waits for its offers to be stored.
const OFFER_STORE_WAIT: Duration = Duration::from_secs(2);

/// A target claimed here, waiting for the old owner's release.
struct Claimed {
    config: Arc<TargetConfig>,
    /// The newest resume point known (the read's, then each record of the old owner).
    resume: Resume,
    /// The epoch of the claim.
    epoch: u64,
    since: Instant,
    deadline: Instant,
}

/// What one record of another worker means for a handover.
enum Verdict {
    /// Not a handover's record: served as usual.
    NotOurs,
    /// Acted on.
    Done,
    /// A claim of a target offered here: stop it.
    Stop(TargetId),
}

/// What a worker hands over and what it claimed.
#[derive(Default)]
pub(crate) struct Handover {
    /// Targets streaming on after their partition was revoked, until a claim or the deadline.
    offered: BTreeMap<TargetId, Instant>,
    /// Targets claimed from another worker, not started yet.
    claimed: BTreeMap<TargetId, Claimed>,
}

impl Handover {
    /// Whether anything is being handed over from here.
    pub(crate) fn offering(&self) -> bool {
        !self.offered.is_empty()
    }

    /// The targets streaming on after their partition was revoked.
    pub(crate) fn offered(&self) -> impl Iterator<Item = &TargetId> {
        self.offered.keys()
    }

    /// Whether `id` is claimed here and waits for its release.
    pub(crate) fn is_claimed(&self, id: &TargetId) -> bool {
        self.claimed.contains_key(id)
    }

    /// Offers `ids` (running targets of revoked partitions) for `timeout`, and waits (a short
    /// bounded while) until the offers are stored. Returns the targets it could not offer
    /// (no checkpoint yet): the caller stops them as in a handover without overlap.
    pub(crate) async fn offer(
        &mut self,
        ids: Vec<TargetId>,
        supervisor: &Supervisor,
        timeout: Duration,
    ) -> Vec<TargetId> {
        let offered = supervisor.offer(&ids);
        let deadline = Instant::now() + timeout;
        let mut unoffered = Vec::new();
        for id in ids {
            if offered.iter().any(|(o, _)| *o == id) {
                self.offered.insert(id, deadline);
            } else {
                unoffered.push(id);
            }
        }
        let waited = Instant::now();
        while !supervisor.offers_stored(&offered) && waited.elapsed() < OFFER_STORE_WAIT {
            // Checkpoint answers come within milliseconds; nothing else signals them here.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !supervisor.offers_stored(&offered) {
            tracing::warn!(
                targets = offered.len(),
                "not every handover offer was stored in time: a new owner may start a target before this one stops (duplicates, never loss)"
            );
        }
        unoffered
    }

    /// Claims `config`'s target, offered by another worker, resuming at `resume` at the
    /// latest; `false` when the claim could not be written (the caller starts it at once).
    pub(crate) fn claim(
        &mut self,
        config: Arc<TargetConfig>,
        resume: Resume,
        supervisor: &mut Supervisor,
        timeout: Duration,
    ) -> bool {
        match supervisor.claim(&config.id, &resume) {
            Ok(epoch) => {
                let now = Instant::now();
                self.claimed.insert(
                    config.id.clone(),
                    Claimed {
                        config,
                        resume,
                        epoch,
                        since: now,
                        deadline: now + timeout,
                    },
                );
                true
            }
            Err(error) => {
                tracing::warn!(target_id = %config.id, %error, "cannot write the handover claim: starting the target at once (duplicates, never loss)");
                false
            }
        }
    }

    /// Forgets claims of targets in `gone` (their partitions were revoked before the release).
    pub(crate) fn drop_claims(&mut self, gone: impl Fn(&TargetId) -> bool) {
        self.claimed.retain(|id, _| !gone(id));
    }

    /// Takes the offered targets that `back` says are this worker's again (their partition
    /// was assigned back before a claim came).
    pub(crate) fn take_offered(&mut self, back: impl Fn(&TargetId) -> bool) -> Vec<TargetId> {
        let ids: Vec<TargetId> = self.offered.keys().filter(|id| back(id)).cloned().collect();
        for id in &ids {
            self.offered.remove(id);
        }
        ids
    }

    /// Acts on checkpoint records other workers wrote (a batch, as they came): takes out the
    /// handover's (claims of targets offered here, records of targets claimed here) and leaves
    /// the rest in `landed` for the caller. The claimed targets offered here are stopped
    /// together (each writing its release), not one after another.
    pub(crate) async fn landed(
        &mut self,
        landed: &mut Vec<Landed>,
        supervisor: &mut Supervisor,
        grace: Duration,
    ) {
        let mut stopping = Vec::new();
        landed.retain(|record| match self.one(record, supervisor) {
            Verdict::NotOurs => true,
            Verdict::Done => false,
            Verdict::Stop(id) => {
                stopping.push(id);
                false
            }
        });
        if stopping.is_empty() {
            return;
        }
        let failed = supervisor.stop_many(&stopping, grace).await;
        tracing::info!(
            targets = stopping.len(),
            failed,
            "handover: the new owners claimed these targets; stopped here (their final checkpoints are the releases)"
        );
    }

    fn one(&mut self, landed: &Landed, supervisor: &mut Supervisor) -> Verdict {
        let Ok(id) = landed.target.parse::<TargetId>() else {
            return Verdict::NotOurs;
        };
        if let Some(claimed) = self.claimed.get_mut(&id) {
            if landed.epoch >= claimed.epoch {
                return Verdict::NotOurs; // not the old owner's: a newer claimant's
            }
            if landed.mark != Mark::Release {
                // The old owner's newer checkpoint: where to start should the release not come.
                claimed.resume.event_id.clone_from(&landed.event_id);
                return Verdict::Done;
            }
            if let Some(claimed) = self.claimed.remove(&id) {
                let resume = Resume {
                    event_id: landed.event_id.clone(),
                    epoch: claimed.resume.epoch.max(landed.epoch),
                    offered_by: None,
                };
                tracing::info!(
                    target_id = %id,
                    waited_ms = millis(claimed.since.elapsed()),
                    resume_from = %resume.event_id,
                    "handover: the old owner released the target; starting it from its release"
                );
                start(supervisor, claimed.config, resume);
            }
            return Verdict::Done;
        }
        let Some(epoch) = supervisor.epoch_of(&id) else {
            return Verdict::NotOurs;
        };
        if !self.offered.contains_key(&id) || landed.epoch <= epoch {
            return Verdict::NotOurs;
        }
        // A newer owner claimed (or runs) a target offered here: stop it, writing the release.
        self.offered.remove(&id);
        tracing::debug!(
            target_id = %id,
            their_epoch = landed.epoch,
            owner = landed.owner.as_deref().unwrap_or("unstamped"),
            "handover: the new owner claimed the target; stopping it here (its final checkpoint is the release)"
        );
        Verdict::Stop(id)
    }

    /// Ends what passed its deadline: offered targets no claim came for are stopped, claimed
    /// targets no release came for start from the newest checkpoint known (not while
    /// `may_start` is false: the lease expired, so nothing starts here until it is renewed).
    pub(crate) async fn expire(
        &mut self,
        supervisor: &mut Supervisor,
        grace: Duration,
        may_start: bool,
    ) {
        let now = Instant::now();
        let running: Vec<TargetId> = supervisor.ids();
        self.offered
            .retain(|id, _| running.binary_search(id).is_ok());
        let stale: Vec<TargetId> = self
            .offered
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        if !stale.is_empty() {
            for id in &stale {
                self.offered.remove(id);
            }
            tracing::warn!(
                targets = stale.len(),
                "handover: no new owner claimed these targets in time; stopping them here"
            );
            supervisor.stop_many(&stale, grace).await;
        }
        if !may_start {
            return;
        }
        let late: Vec<TargetId> = self
            .claimed
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some(claimed) = self.claimed.remove(&id) {
                tracing::warn!(
                    target_id = %id,
                    resume_from = %claimed.resume.event_id,
                    "handover: the old owner did not release the target in time; starting it from the newest checkpoint read (duplicates, never loss)"
                );
                start(supervisor, claimed.config, claimed.resume);
            }
        }
    }
}

fn start(supervisor: &mut Supervisor, config: Arc<TargetConfig>, resume: Resume) {
    let id = config.id.clone();
    if let Err(error) = supervisor.start(config, Some(resume), Duration::ZERO) {
        tracing::error!(target_id = %id, %error, "a claimed target runs already");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
