//! Dataset deliveries (`deliveries:` in `aggregator.yaml`): on each entry's schedule, every
//! target it covers that this aggregator owns and whose state is synced is written as one
//! immutable version of its state, a data file and a manifest, into a directory or an S3
//! bucket; older deliveries beyond `keep` are deleted. A target that is not synced is skipped
//! and counted.
//!
//! Runs on the async runtime, apart from the consumer thread; file I/O and encoding go to
//! `spawn_blocking`. It must never take a target's lock for longer than the O(1) capture of a
//! version, never block or slow merging, and never deliver a target it does not own.
//!
//! `format` encodes a version (`columnar`: as Parquet), `deliver` prepares one delivery and
//! writes it into a directory (`file`: atomic writes, retention), `s3` into a bucket, `retry`
//! retries the write with a bounded backoff (the version is encoded once). A round delivers up
//! to [`CONCURRENT`] targets at once.

mod columnar;
mod columns;
mod deliver;
mod file;
mod format;
mod retry;
mod s3;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use futures::future::Either;
use sluice_config::{CronSchedule, DeliveryConfig, DeliverySchedule, Destination};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::deliver::{Delivered, DeliveryError, Prepared, Stage};
use crate::metrics::DeliveryResult;
use crate::shared::Shared;
use crate::store::Cell;
use crate::versions::StateView;

pub use retry::Backoff;
pub use status::DeliveryStatus;
use status::Outcome;

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
    let mut next = Next::new(&entry.schedule);
    tracing::info!(destination = %entry.destination.describe(), schedule = %describe(&entry.schedule), format = entry.format.as_str(), keep = entry.keep, "deliveries scheduled");
    loop {
        let Some(wait) = next.wait() else {
            tracing::warn!(schedule = %describe(&entry.schedule), "the delivery schedule has no next time: deliveries stop");
            return;
        };
        tokio::select! {
            // Stopping wins over a due round.
            biased;
            () = shutdown.cancelled() => return,
            () = wait => round(&shared, &entry, &shutdown).await,
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

/// Where a round writes: a directory, or a bucket whose client was built for the round.
#[derive(Clone)]
enum Sink {
    Dir(PathBuf),
    S3(s3::Bucket),
}

impl Sink {
    /// The sink of `destination`; an S3 client reads its credentials now.
    fn open(destination: &Destination) -> Result<Sink, DeliveryError> {
        Ok(match destination {
            Destination::Dir(dir) => Sink::Dir(dir.clone()),
            Destination::S3(bucket) => Sink::S3(s3::Bucket::open(bucket)?),
        })
    }

    /// Writes `prepared` and applies retention.
    async fn write(
        &self,
        prepared: Arc<Prepared>,
        keep: usize,
    ) -> Result<Delivered, DeliveryError> {
        match self {
            Sink::S3(bucket) => bucket.write(&prepared, keep).await,
            Sink::Dir(dir) => {
                let dir = dir.clone();
                let path = dir.display().to_string();
                tokio::task::spawn_blocking(move || deliver::write_dir(&dir, &prepared, keep))
                    .await
                    .unwrap_or_else(|join| Err(DeliveryError::new(Stage::Task, path, join)))
            }
        }
    }
}

/// One round: each covered, owned target (at most [`CONCURRENT`] at once).
async fn round(shared: &Shared, entry: &DeliveryConfig, shutdown: &CancellationToken) {
    let covered = || {
        shared
            .store
            .all()
            .into_iter()
            .filter(|cell| entry.covers(cell.def.id()) && !cell.is_retired())
    };
    let sink = match Sink::open(&entry.destination) {
        Ok(sink) => sink,
        Err(error) => {
            // Nothing can be written this round: every target's delivery failed.
            tracing::error!(destination = %entry.destination.describe(), kind = error.kind(), %error, "deliveries failed: the destination cannot be opened; the next round tries again");
            let message = error.to_string();
            for cell in covered() {
                let outcome = match synced_version(&cell) {
                    None => Outcome::Skipped,
                    Some(_) => Outcome::Failed(&message),
                };
                record(shared, entry, cell.def.id(), outcome);
            }
            return;
        }
    };
    futures::stream::iter(covered())
        .for_each_concurrent(CONCURRENT, |cell| {
            let sink = sink.clone();
            async move {
                // A target that moved away during the round is its new owner's to deliver.
                if shutdown.is_cancelled() || cell.is_retired() {
                    return;
                }
                match synced_version(&cell) {
                    None => {
                        tracing::debug!(
                            target_id = cell.def.id(),
                            "delivery skipped: the state is not synced"
                        );
                        record(shared, entry, cell.def.id(), Outcome::Skipped);
                    }
                    Some(view) => deliver_one(shared, entry, &sink, &cell, view, shutdown).await,
                }
            }
        })
        .await;
}

/// Counts `outcome` of `target`'s delivery and shows it on the page.
fn record(shared: &Shared, entry: &DeliveryConfig, target: &str, outcome: Outcome<'_>) {
    let now = SystemTime::now();
    let result = match outcome {
        Outcome::Delivered(_) => DeliveryResult::Ok,
        Outcome::Failed(_) => DeliveryResult::Failed,
        Outcome::Skipped => DeliveryResult::SkippedNotSynced,
    };
    shared.metrics.delivered(target, result, now);
    shared
        .deliveries
        .record(target, &entry.destination.describe(), outcome, now);
}

/// The target's current version, if it is complete and synced.
fn synced_version(cell: &Cell) -> Option<StateView> {
    cell.capture().filter(|view| view.synced)
}

/// Encodes `view` once, then writes it, retrying the write with [`Backoff::DELIVERY`] until it
/// is written, the attempts run out, the target moves away or the process stops.
async fn deliver_one(
    shared: &Shared,
    entry: &DeliveryConfig,
    sink: &Sink,
    cell: &Cell,
    view: StateView,
    shutdown: &CancellationToken,
) {
    let target = cell.def.id();
    let (version, change_seq, rows) = (view.version, view.change_seq, view.entities.len());
    let (format, columns) = (entry.format, entry.columns.clone());
    let prepared = tokio::task::spawn_blocking(move || {
        deliver::prepare(&view, format, columns.as_deref(), SystemTime::now())
    })
    .await
    .unwrap_or_else(|join| Err(DeliveryError::new(Stage::Task, target, join)));
    let prepared = match prepared {
        Ok(prepared) => Arc::new(prepared),
        Err(error) => {
            // The same version encodes the same way: no retry.
            tracing::error!(target_id = target, kind = error.kind(), %error, "delivery failed; the next round tries again");
            record(shared, entry, target, Outcome::Failed(&error.to_string()));
            return;
        }
    };
    let stop = async {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = cell.gone.cancelled() => {}
        }
    };
    let attempt = |_: u32| sink.write(prepared.clone(), entry.keep);
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
            tracing::info!(target_id = target, file = %delivered.data, manifest = %delivered.manifest, version, change_seq, rows, bytes = delivered.bytes, deleted = delivered.deleted, "delivered");
            record(shared, entry, target, Outcome::Delivered(&delivered.data));
        }
        Some(Err(error)) => record(shared, entry, target, Outcome::Failed(&error.to_string())),
        // Stopped, or the target moved away: its new owner delivers it.
        None => record(
            shared,
            entry,
            target,
            Outcome::Failed("stopped before it was written"),
        ),
    }
}
