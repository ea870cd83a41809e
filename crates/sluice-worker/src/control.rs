//! Starting and stopping targets of a running worker from outside it: a cloneable [`Control`]
//! handle whose commands the worker's supervisor carries out in order.
//!
//! What it must NOT do: touch a target itself; it only carries commands and their answers.

use std::sync::Arc;
use std::time::Duration;

use sluice_config::{TargetConfig, TargetId};
use tokio::sync::{mpsc, oneshot};

use crate::paused::Paused;
use crate::supervisor::{ControlError, Stopped, Supervisor};

/// Commands a worker takes at run time.
pub(crate) enum Command {
    Start {
        config: Box<TargetConfig>,
        resume_from: Option<String>,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Stop {
        id: TargetId,
        reply: oneshot::Sender<Result<Stopped, ControlError>>,
    },
    List {
        reply: oneshot::Sender<Vec<TargetId>>,
    },
    Pause {
        id: TargetId,
        reply: oneshot::Sender<Result<Stopped, ControlError>>,
    },
    Resume {
        id: TargetId,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    ListPaused {
        reply: oneshot::Sender<Vec<TargetId>>,
    },
    SetCheckpoint {
        id: TargetId,
        /// `None`: reset (a tombstone).
        event_id: Option<String>,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// A handle that starts, stops and lists the targets of a worker run with
/// [`crate::run_controlled`].
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Command>,
}

/// The worker's end of a [`Control`].
pub struct ControlReceiver {
    rx: mpsc::Receiver<Command>,
}

impl ControlReceiver {
    pub(crate) async fn next(&mut self) -> Option<Command> {
        self.rx.recv().await
    }
}

impl Control {
    /// A handle and the receiver to pass to [`crate::run_controlled`].
    pub fn channel() -> (Control, ControlReceiver) {
        let (tx, rx) = mpsc::channel(64);
        (Control { tx }, ControlReceiver { rx })
    }

    /// Starts a target (validated config) resuming after `resume_from` (`None`: from the
    /// upstream's start, without `Last-Event-ID`).
    pub async fn start(
        &self,
        config: TargetConfig,
        resume_from: Option<String>,
    ) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Start {
            config: Box::new(config),
            resume_from,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::WorkerGone)?
    }

    /// Stops a target: returns once it drained and its final checkpoint is stored.
    pub async fn stop(&self, id: &TargetId) -> Result<Stopped, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stop {
            id: id.clone(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::WorkerGone)?
    }

    /// The ids of the running targets, in order.
    pub async fn targets(&self) -> Result<Vec<TargetId>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::List { reply }).await?;
        answer.await.map_err(|_| ControlError::WorkerGone)
    }

    /// Pauses a running target: returns once it drained and its final checkpoint is stored;
    /// it stays defined (shown in `/status` as stopped, delivery `paused`) until resumed,
    /// stopped or started again.
    pub async fn pause(&self, id: &TargetId) -> Result<Stopped, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Pause {
            id: id.clone(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::WorkerGone)?
    }

    /// Resumes a paused target from its final checkpoint, with the definition it ran with.
    pub async fn resume(&self, id: &TargetId) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Resume {
            id: id.clone(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::WorkerGone)?
    }

    /// The ids of the paused targets, in order.
    pub async fn paused(&self) -> Result<Vec<TargetId>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::ListPaused { reply }).await?;
        answer.await.map_err(|_| ControlError::WorkerGone)
    }

    /// Moves a target's checkpoint to `event_id` (paused, written, resumed: see the admin API);
    /// returns once the record is stored and the target runs from it again.
    pub async fn set_checkpoint(
        &self,
        id: &TargetId,
        event_id: String,
    ) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SetCheckpoint {
            id: id.clone(),
            event_id: Some(event_id),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::WorkerGone)?
    }

    /// Resets a target's checkpoint (a tombstone: paused, written, resumed, as
    /// [`Control::set_checkpoint`]); it then starts over, without `Last-Event-ID`.
    pub async fn reset_checkpoint(&self, id: &TargetId) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SetCheckpoint {
            id: id.clone(),
            event_id: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::WorkerGone)?
    }

    async fn send(&self, command: Command) -> Result<(), ControlError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| ControlError::WorkerGone)
    }
}

/// Carries out one command; a stop may take up to `grace`.
pub(crate) async fn serve(
    command: Command,
    supervisor: &mut Supervisor,
    paused: &mut Paused,
    grace: Duration,
) {
    match command {
        Command::Start {
            config,
            resume_from,
            reply,
        } => {
            let config = Arc::new(*config);
            let id = config.id.clone();
            // A start replaces a pause of the same target.
            paused.forget(&id, supervisor);
            // An epoch above every run of the target here (none was read for this start).
            let resume = resume_from.map(|event_id| sluice_publish::Resume {
                event_id,
                epoch: 0,
                offered_by: None,
            });
            let result = supervisor.start(config, resume, Duration::ZERO);
            match &result {
                Ok(()) => tracing::info!(target_id = %id, "target started"),
                Err(error) => tracing::warn!(target_id = %id, %error, "target not started"),
            }
            let _ = reply.send(result);
        }
        Command::Stop { id, reply } => {
            if paused.forget(&id, supervisor) {
                tracing::info!(target_id = %id, "paused target stopped");
                let _ = reply.send(Ok(Stopped { checkpoint: None }));
                return;
            }
            let result = supervisor.stop(&id, grace).await;
            match &result {
                Ok(stopped) => {
                    tracing::info!(target_id = %id, checkpoint = ?stopped.checkpoint, "target stopped and checkpointed")
                }
                Err(error) => {
                    tracing::warn!(target_id = %id, %error, kind = error.kind(), "target stop did not finish cleanly")
                }
            }
            let _ = reply.send(result);
        }
        Command::List { reply } => {
            let _ = reply.send(supervisor.ids());
        }
        Command::Pause { id, reply } => {
            let result = paused.pause(&id, supervisor, grace).await;
            match &result {
                Ok(stopped) => {
                    tracing::info!(target_id = %id, checkpoint = ?stopped.checkpoint, "target paused")
                }
                Err(error) => {
                    tracing::warn!(target_id = %id, %error, kind = error.kind(), "target not paused")
                }
            }
            let _ = reply.send(result);
        }
        Command::Resume { id, reply } => {
            let result = paused.resume(&id, supervisor);
            match &result {
                Ok(()) => tracing::info!(target_id = %id, "target resumed"),
                Err(error) => {
                    tracing::warn!(target_id = %id, %error, kind = error.kind(), "target not resumed")
                }
            }
            let _ = reply.send(result);
        }
        Command::ListPaused { reply } => {
            let _ = reply.send(paused.ids());
        }
        Command::SetCheckpoint {
            id,
            event_id,
            reply,
        } => {
            let result = paused
                .set_checkpoint(&id, event_id.clone(), supervisor, grace)
                .await;
            match &result {
                Ok(()) => {
                    tracing::info!(target_id = %id, checkpoint = event_id.as_deref().unwrap_or("(reset)"), "checkpoint moved")
                }
                Err(error) => {
                    tracing::warn!(target_id = %id, %error, kind = error.kind(), "checkpoint not moved")
                }
            }
            let _ = reply.send(result);
        }
    }
}
