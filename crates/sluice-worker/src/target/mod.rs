//! One target's life: the connection state machine and its delivery pipeline, in one task.
//!
//! - [`connection`]: the state machine (phases, backoff, `retry:`, Retry-After, the idle
//!   watchdog, rotation timing); the status row's state is derived from its phase.
//! - [`stream`] and [`rotation`]: the parse loop of a stream, and which events of a
//!   replacement stream are provable replays.
//! - [`pipe`], [`in_flight`] and [`checkpoint`]: the delivery window, the blocked queue,
//!   retries, and checkpoint pacing.
//! - [`upstream`] and [`kafka`]: the two outside edges, as small traits with one production
//!   implementation each (reqwest, rdkafka), so the rest is tested without a network under
//!   tokio's paused clock.
//!
//! One task per target owns everything here; it shares only the producer, the transports, the
//! pools, its stop signal and the status row it writes.
//!
//! Invariant: the checkpoint written for a target never passes an event Kafka has not
//! acknowledged together with every earlier event of that target.

mod checkpoint;
mod connection;
mod in_flight;
mod kafka;
mod pipe;
mod rotation;
mod stream;
mod upstream;

#[cfg(test)]
mod tests;

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::time::Duration;

use sluice_config::TargetConfig;
use std::task::{Context, Poll};

use tokio::time::sleep;

pub use checkpoint::CHECKPOINT_INTERVAL;
pub use pipe::WINDOW;

pub(crate) use kafka::{Kafka, KafkaSink};
pub(crate) use upstream::{HttpUpstream, Upstream};

use crate::nudge::Nudge;
use crate::status::TargetStatus;
use crate::stop::StopSignal;
use connection::{Machine, Phase};
use pipe::Pipe;

/// Everything one target task starts from.
pub(crate) struct Launch<U, K> {
    pub(crate) upstream: U,
    pub(crate) kafka: Arc<K>,
    pub(crate) config: Arc<TargetConfig>,
    pub(crate) status: Arc<TargetStatus>,
    /// The checkpoint to resume after (`None`: from the upstream's start).
    pub(crate) resume_from: Option<String>,
    /// The jittered start.
    pub(crate) start_delay: Duration,
    /// This target's stop: it stops reading, drains, writes its final checkpoint and ends.
    pub(crate) stop: Arc<StopSignal>,
    /// The owner epoch its checkpoint records carry (above every epoch read for the target).
    pub(crate) epoch: u64,
    /// Asks it to write its checkpoint again (an older owner's record landed after its own).
    pub(crate) rewrite: Arc<Nudge>,
}

/// Runs one target until its stop signal, then drains and writes its final checkpoint. A
/// target stopped for good (204, an error no retry fixes) waits for the signal too.
///
/// Not an `async fn`: one keeps its arguments in its state for its whole life, after they moved
/// into the machine and the pipe (70 bytes of every target's task). Call it in the runtime.
pub(crate) fn run<U: Upstream, K: Kafka>(launch: Launch<U, K>) -> impl Future<Output = ()> + Send {
    let Launch {
        upstream,
        kafka,
        config,
        status,
        resume_from,
        start_delay,
        stop,
        epoch,
        rewrite,
    } = launch;
    let mut machine = Machine::new(upstream, config.clone(), status.clone(), resume_from);
    let mut pipe = Pipe::new(kafka, config, status, &machine.last_event_id, epoch);
    let mut phase: Phase<U::Body> = Phase::Starting(Box::pin(sleep(start_delay)));
    pipe.status.set_state(phase.state());
    // The state lives in the block's captures, used in place (an `async fn` would copy its
    // arguments into locals and keep both).
    async move {
        let stop_notified = stop.notified();
        tokio::pin!(stop_notified);
        let mut stop_registered = false;
        let mut stopping = false;
        let mut was_reading = true;
        loop {
            let can_read = pipe.can_read();
            if can_read && !was_reading {
                phase.reading_resumed();
            }
            was_reading = can_read;
            let room_wait = pipe.arm_room_wait(stopping);
            let waiting_for_checkpoint = stopping && pipe.checkpoints.in_flight();
            // Disjoint borrows: the branches' futures all exist at once.
            let deliveries = &mut pipe.deliveries;
            let checkpoints = &mut pipe.checkpoints;
            let room = &mut pipe.room_wait;
            tokio::select! {
                biased;
                () = poll_fn(|cx| stop.poll_stopped(cx, stop_notified.as_mut(), &mut stop_registered)), if !stopping => {
                    stopping = true;
                    phase = Phase::Stopped;
                }
                Some(done) = poll_fn(|cx| deliveries.poll_next(cx)), if !deliveries.is_empty() => {
                    pipe.on_delivered(done);
                    if pipe.has_blocked() {
                        pipe.flush_blocked();
                    }
                }
                (id, result) = poll_fn(|cx| checkpoints.poll_answer(cx)), if waiting_for_checkpoint => {
                    pipe.on_checkpoint(id, result);
                }
                () = poll_fn(|cx| poll_wait(room, cx)), if room_wait => {
                    pipe.on_room();
                }
                () = poll_fn(|cx| rewrite.poll_nudged(cx)) => {
                    tracing::info!(target_id = %pipe.config.id, epoch, "an older owner's checkpoint landed after this run's: writing it again");
                    pipe.checkpoints.rewrite();
                }
                step = poll_fn(|cx| phase.poll_step(can_read, cx)), if !stopping => {
                    machine.handle(step, &mut phase, &mut pipe);
                }
            }
            let state = phase.state();
            if pipe.status.state() != state {
                pipe.status.set_state(state);
            }
            if !stopping {
                pipe.take_checkpoint_answer();
            }
            pipe.update_paused();
            pipe.maybe_checkpoint(stopping);
            if stopping && pipe.drained() && pipe.checkpoint_settled() {
                break;
            }
        }
        tracing::debug!(target_id = %pipe.config.id, checkpoint = %pipe.checkpoints.written(), "target stopped");
    }
}

/// Polls the wait in `slot`, if any (pending when empty).
fn poll_wait(slot: &mut Option<in_flight::BoxFuture<()>>, cx: &mut Context<'_>) -> Poll<()> {
    match slot.as_mut() {
        Some(wait) => wait.as_mut().poll(cx),
        None => Poll::Pending,
    }
}
