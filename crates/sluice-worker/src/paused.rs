//! Targets paused at run time (through [`crate::Control`]): a paused target is stopped with its
//! final checkpoint, stays defined here, and shows in `/status` as stopped with delivery
//! `paused`; resuming starts it again from that checkpoint with the definition it ran with.
//!
//! What it must NOT do: stop or start a target other than through the [`Supervisor`] (so a
//! pause returns only once the final checkpoint is stored), or decide ownership (with a fleet,
//! a paused target that moves to another worker runs there: the pause is this worker's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_client::redact::redact_url;
use sluice_config::{TargetConfig, TargetId};

use crate::status::{Delivery, State, TargetStatus};
use crate::supervisor::{ControlError, Stopped, Supervisor};

/// What is shown as the error of a paused target's row.
pub(crate) const PAUSED_REASON: &str = "paused at run time";

/// A paused target.
struct Entry {
    config: Arc<TargetConfig>,
    checkpoint: Option<String>,
}

/// The targets paused in this worker, by id.
#[derive(Default)]
pub(crate) struct Paused {
    entries: BTreeMap<TargetId, Entry>,
}

impl Paused {
    /// The ids of the paused targets, in order.
    pub(crate) fn ids(&self) -> Vec<TargetId> {
        self.entries.keys().cloned().collect()
    }

    /// Pauses a running target: stops it (its final checkpoint stored before this returns,
    /// within `grace`) and keeps its definition and checkpoint for [`Paused::resume`].
    pub(crate) async fn pause(
        &mut self,
        id: &TargetId,
        supervisor: &mut Supervisor,
        grace: Duration,
    ) -> Result<Stopped, ControlError> {
        let config = supervisor
            .config_of(id)
            .ok_or_else(|| ControlError::NotRunning(id.clone()))?;
        let stopped = supervisor.stop(id, grace).await?;
        let entry = Entry {
            config,
            checkpoint: stopped.checkpoint.clone(),
        };
        self.keep(id, entry, supervisor);
        Ok(stopped)
    }

    /// Starts a paused target again from its final checkpoint (an owner epoch above its run).
    pub(crate) fn resume(
        &mut self,
        id: &TargetId,
        supervisor: &mut Supervisor,
    ) -> Result<(), ControlError> {
        let entry = self
            .entries
            .remove(id)
            .ok_or_else(|| ControlError::NotPaused(id.clone()))?;
        supervisor.registry().remove(id);
        let resume = entry
            .checkpoint
            .clone()
            .map(|event_id| sluice_publish::Resume {
                event_id,
                epoch: 0,
                offered_by: None,
            });
        let started = supervisor.start(entry.config.clone(), resume, Duration::ZERO);
        if started.is_err() {
            // It did not start (a run of it came first): still paused, as it was.
            self.keep(id, entry, supervisor);
        }
        started
    }

    /// Moves a target's checkpoint to `event_id` (`None`: resets it, the target starts over
    /// without `Last-Event-ID`): a running target is paused first (its final
    /// checkpoint stored), the record is written with an epoch above that run, and the target
    /// resumes from it; a paused one stays paused, at the new checkpoint. So the target's own
    /// paced writes cannot undo the move.
    pub(crate) async fn set_checkpoint(
        &mut self,
        id: &TargetId,
        event_id: Option<String>,
        supervisor: &mut Supervisor,
        grace: Duration,
    ) -> Result<(), ControlError> {
        let was_running = supervisor.config_of(id).is_some();
        if was_running {
            self.pause(id, supervisor, grace).await?;
        } else if !self.entries.contains_key(id) {
            return Err(ControlError::NotRunning(id.clone()));
        }
        let written = supervisor
            .write_checkpoint(id, event_id.as_deref(), grace)
            .await;
        if written.is_ok()
            && let Some(mut entry) = self.entries.remove(id)
        {
            supervisor.registry().remove(id);
            entry.checkpoint = event_id;
            self.keep(id, entry, supervisor);
        }
        let resumed = if was_running {
            self.resume(id, supervisor)
        } else {
            Ok(())
        };
        written?;
        resumed
    }

    /// Gives a paused target a new definition (it resumes with it); `false` when `id` is not
    /// paused.
    pub(crate) fn redefine(&mut self, id: &TargetId, config: Arc<TargetConfig>) -> bool {
        match self.entries.get_mut(id) {
            Some(entry) => {
                entry.config = config;
                true
            }
            None => false,
        }
    }

    /// Drops a paused target (it was stopped or started by other means): its row goes.
    pub(crate) fn forget(&mut self, id: &TargetId, supervisor: &Supervisor) -> bool {
        let was = self.entries.remove(id).is_some();
        if was {
            supervisor.registry().remove(id);
        }
        was
    }

    /// Keeps a stopped target as paused, with its `/status` row.
    fn keep(&mut self, id: &TargetId, entry: Entry, supervisor: &Supervisor) {
        let row = Arc::new(TargetStatus::new(
            entry.config.id.clone(),
            redact_url(&entry.config.url),
            entry.config.topic.clone(),
            supervisor.origin(),
        ));
        row.set_state(State::Stopped);
        row.set_delivery(Delivery::Paused);
        row.set_error(Some(PAUSED_REASON.to_owned()));
        if let Some(checkpoint) = &entry.checkpoint {
            row.set_checkpoint(checkpoint);
            row.set_last_acked_id(checkpoint);
        }
        supervisor.registry().add([row]);
        self.entries.insert(id.clone(), entry);
    }
}
