//! Dataset deliveries (`deliveries:` in `aggregator.yaml`): on each entry's schedule, every
//! target it covers that this aggregator owns and whose state is synced is written as one
//! immutable version of its state, a data file and a manifest, into a directory; older
//! deliveries beyond `keep` are deleted. A target that is not synced is skipped and counted.
//!
//! Runs on the async runtime, apart from the consumer thread; file I/O and encoding go to
//! `spawn_blocking`. It must never take a target's lock for longer than the O(1) capture of a
//! version, never block or slow merging, and never deliver a target it does not own.
//!
//! `format` encodes a version (`columnar`: as Parquet), `file` writes atomically and applies retention, `deliver` does
//! one delivery, `retry` retries one with a bounded backoff. A round delivers up to
//! [`CONCURRENT`] targets at once.

mod columnar;
mod deliver;
mod file;
mod format;
mod retry;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use futures::future::Either;
use sluice_config::{CronSchedule, DeliveryConfig, DeliverySchedule, Destination};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::deliver::{DeliveryError, Stage};
use crate::metrics::DeliveryResult;
use crate::shared::Shared;
use crate::store::Cell;
use crate::versions::StateView;

pub use retry::Backoff;

/// Runs every entry's schedule until `shutdown` is cancelled (a delivery in flight finishes
/// its current attempt first; no more retries after it).
pub async fn run(shared: Arc<Shared>, entries: Vec<DeliveryConfig>, shutdown: CancellationToken) {
    let mut tasks = JoinSet::new();
    for entry in entries {
        tasks.spawn(schedule(shared.clone(), entry, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// One entry's loop: a round at each time of its schedule (`every`: the first one `every`
/// after the start; a round that overruns delays the next rather than bunching them).
async fn schedule(shared: Arc<Shared>, entry: DeliveryConfig, shutdown: CancellationToken) {
    let Destination::Dir(dir) = &entry.destination;
    let mut next = Next::new(&entry.schedule);
    tracing::info!(dir = %dir.display(), schedule = %describe(&entry.schedule), format = entry.format.as_str(), keep = entry.keep, "deliveries scheduled");
    loop {
        let Some(wait) = next.wait() else {
            tracing::warn!(schedule = %describe(&entry.schedule), "the delivery schedule has no next time: deliveries stop");
            return;
        };
        tokio::select! {
            // Stopping wins over a due round.
            biased;
            () = shutdown.cancelled() => return,
            () = wait => round(&shared, &entry, dir, &shutdown).await,
        }
    }
}

/// The schedule as logged.
fn describe(schedule: &DeliverySchedule) -> String {
    match schedule {
        DeliverySchedule::Every(every) => format!("every {}", humantime::format_duration(*every)),
        DeliverySchedule::Cron(cron) => format!("cron {} (UTC)", cron.expression()),
    }
}

/// Waits for the next time of a schedule.
enum Next<'a> {
    /// An interval, on tokio's clock.
    Every(tokio::time::Interval),
    /// Cron times, on the wall clock (UTC).
    Cron(&'a CronSchedule),
}

impl<'a> Next<'a> {
    fn new(schedule: &'a DeliverySchedule) -> Next<'a> {
        match schedule {
            DeliverySchedule::Every(every) => {
                let start = tokio::time::Instant::now() + *every;
                let mut tick = tokio::time::interval_at(start, *every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Next::Every(tick)
            }
            DeliverySchedule::Cron(cron) => Next::Cron(cron),
        }
    }

    /// A future that completes at the next time; `None` when there is none.
    fn wait(&mut self) -> Option<impl std::future::Future<Output = ()> + '_> {
        let sleep = match self {
            Next::Every(tick) => Either::Left(async move {
                tick.tick().await;
            }),
            Next::Cron(cron) => {
                let now = SystemTime::now();
                let due = cron.next_after(now)?;
                let pause = due.duration_since(now).unwrap_or_default();
                Either::Right(tokio::time::sleep(pause))
            }
        };
        Some(sleep)
    }
}

/// Deliveries of one round in flight at once: a target whose writes fail and are retried does
/// not hold up the others, and at most this many encoded states are in memory.
const CONCURRENT: usize = 4;

/// One round: each covered, owned target (at most [`CONCURRENT`] at once).
async fn round(shared: &Shared, entry: &DeliveryConfig, dir: &Path, shutdown: &CancellationToken) {
    futures::stream::iter(shared.store.all())
        .for_each_concurrent(CONCURRENT, |cell| async move {
            // A target that moved away during the round is its new owner's to deliver.
            if shutdown.is_cancelled() || !entry.covers(cell.def.id()) || cell.is_retired() {
                return;
            }
            let result = match synced_version(&cell) {
                None => {
                    tracing::debug!(
                        target_id = cell.def.id(),
                        "delivery skipped: the state is not synced"
                    );
                    DeliveryResult::SkippedNotSynced
                }
                Some(view) => deliver_one(shared, entry, dir, &cell, view, shutdown).await,
            };
            shared
                .metrics
                .delivered(cell.def.id(), result, SystemTime::now());
        })
        .await;
}

/// The target's current version, if it is complete and synced.
fn synced_version(cell: &Cell) -> Option<StateView> {
    cell.capture().filter(|view| view.synced)
}

/// Delivers `view`, retrying with [`Backoff::DELIVERY`] until it is written, the attempts
/// run out, the target moves away or the process stops.
async fn deliver_one(
    shared: &Shared,
    entry: &DeliveryConfig,
    dir: &Path,
    cell: &Cell,
    view: StateView,
    shutdown: &CancellationToken,
) -> DeliveryResult {
    let target = cell.def.id();
    let stop = async {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = cell.gone.cancelled() => {}
        }
    };
    let attempt = |_: u32| {
        let dir = dir.to_owned();
        let view = view.clone();
        let (format, keep) = (entry.format, entry.keep);
        async move {
            let path = dir.display().to_string();
            match tokio::task::spawn_blocking(move || {
                deliver::deliver(&dir, &view, format, keep, SystemTime::now())
            })
            .await
            {
                Ok(result) => result,
                Err(join) => Err(DeliveryError {
                    stage: Stage::Task,
                    path,
                    source: std::io::Error::other(join.to_string()),
                }),
            }
        }
    };
    let log = |n: u32, error: &DeliveryError, last: bool| {
        if last {
            tracing::error!(target_id = target, kind = error.kind(), attempt = n, %error, "delivery failed; the next round tries again");
        } else {
            tracing::warn!(target_id = target, kind = error.kind(), attempt = n, %error, "delivery failed; retrying");
        }
    };
    match Backoff::DELIVERY.run(attempt, log, stop).await {
        Some(Ok(delivered)) => {
            shared.metrics.delivery_bytes.inc_by(delivered.bytes);
            tracing::info!(target_id = target, file = %delivered.data.display(), manifest = %delivered.manifest.display(), version = view.version, change_seq = view.change_seq, rows = view.entities.len(), bytes = delivered.bytes, deleted = delivered.deleted, "delivered");
            DeliveryResult::Ok
        }
        Some(Err(_)) | None => DeliveryResult::Failed,
    }
}
