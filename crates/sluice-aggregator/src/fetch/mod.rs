//! Base-state fetches: for each target whose merger asks for one, a REST fetch spawned on the
//! runtime (`client` builds its HTTP client, `pages` fetches the document or all the pages of a
//! paginated one), its result applied on the consumer thread under
//! the target's lock (`Merger::load_base` with the request's epoch, so a superseded fetch is
//! refused), and a failed one retried later (`retry`).
//!
//! At most [`MAX_CONCURRENT_FETCHES`] fetches run at once, each holding its place until its
//! document is applied, so memory for documents in flight has a bound however many targets need
//! a base state at the same moment (a start, a lost partition, retention running ahead).
//!
//! Each attempt tells the merger when it starts (`Merger::fetch_started_at`, after its place is
//! given and before the request is sent): the deltas offered before it are in the base, and so
//! are the records below the partition's high watermark as the consumer knew it when the
//! attempt was queued (those not consumed yet included: consumer lag). The watermark is read
//! on the consumer thread, from librdkafka's cache (no request), before the attempt waits for
//! its place: a record that reached Kafka during that wait and was consumed only after the base
//! loaded may still apply twice to an unversioned target.
//!
//! It must not block the consumer thread on the network, and never loads a document for an
//! epoch the merger no longer waits for. It does not decide when a fetch is needed (the merger
//! does).

mod client;
mod error;
mod pages;
mod retry;

use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use error::BaseFetchError;
use retry::RetrySchedule;

use crate::shared::Shared;
use crate::store::{Cell, RingEntry, StreamItem};

/// Largest base-state document accepted (a paginated one has its own `max_bytes`).
const MAX_BASE_BYTES: usize = 256 * 1024 * 1024;

/// Base fetches in flight at once, from the request until its document is applied; the others
/// wait their turn in the order they were asked for.
pub const MAX_CONCURRENT_FETCHES: usize = 16;

/// A finished base fetch.
struct Fetched {
    target: String,
    epoch: u64,
    /// The document, or the pages of a paginated one in order.
    result: Result<Vec<Bytes>, BaseFetchError>,
    /// Its place among the fetches in flight, given back once the document is applied.
    _permit: OwnedSemaphorePermit,
}

/// The base fetches of the loop: started, arrived, waiting to retry.
pub struct Fetcher {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Fetched>,
    rx: mpsc::Receiver<Fetched>,
    retries: RetrySchedule,
    permits: Arc<Semaphore>,
    /// One OAuth2 token per grant, shared by the fetches of its targets.
    tokens: Arc<sluice_client::oauth::TokenSources>,
}

impl Fetcher {
    /// A fetcher for the targets of `shared`.
    pub fn new(shared: Arc<Shared>) -> Fetcher {
        let (tx, rx) = mpsc::channel();
        Fetcher {
            shared,
            tx,
            rx,
            retries: RetrySchedule::default(),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES)),
            tokens: Arc::default(),
        }
    }

    /// One step of the loop: starts the fetches queued targets ask for, applies the ones that
    /// finished (which may queue more), then starts the retries that are due. `watermark`
    /// tells a partition's high watermark as the consumer last heard it (`None`: not known).
    pub fn step(&mut self, watermark: &dyn Fn(&str, i32) -> Option<i64>) {
        self.start_queued(watermark);
        while let Ok(fetched) = self.rx.try_recv() {
            self.arrived(fetched);
        }
        self.start_queued(watermark);
        self.start_due_retries(watermark);
    }

    fn start_queued(&mut self, watermark: &dyn Fn(&str, i32) -> Option<i64>) {
        for cell in self.shared.take_fetch_queue() {
            let request = cell.lock().merger.fetch_request();
            if let Some(request) = request {
                self.shared
                    .metrics
                    .resnapshots
                    .inc(cell.def.id(), request.reason.as_str());
                self.spawn(&cell, request.epoch, watermark);
            }
        }
    }

    fn spawn(&self, cell: &Arc<Cell>, epoch: u64, watermark: &dyn Fn(&str, i32) -> Option<i64>) {
        let high_watermark = {
            let mut inner = cell.lock();
            inner.fetching = Some(epoch);
            watermark(&cell.def.target.topic, inner.partition)
        };
        let cell = cell.clone();
        let def = cell.def.clone();
        let pools = self.shared.pools.clone();
        let tx = self.tx.clone();
        let permits = self.permits.clone();
        let tokens = self.tokens.clone();
        self.shared.runtime.spawn(async move {
            // Tokio's semaphore is fair: the fetches start in the order they were asked for.
            let Ok(permit) = permits.acquire_owned().await else {
                return; // closed: the fetcher is gone
            };
            // Every delta offered until now, and every record below the watermark, was in Kafka
            // before the upstream is asked: the base holds it (an unversioned target must not
            // apply it again).
            cell.lock().merger.fetch_started_at(epoch, high_watermark);
            let result = match client::base_client(&def, &pools, &tokens) {
                Ok(client) => pages::fetch_base(&client, &def, MAX_BASE_BYTES).await,
                Err(error) => Err(error.into()),
            };
            let _ = tx.send(Fetched {
                target: def.id().to_owned(),
                epoch,
                result,
                _permit: permit,
            });
        });
    }

    fn arrived(&mut self, fetched: Fetched) {
        let Some(cell) = self.shared.store.get(&fetched.target) else {
            return;
        };
        let pages = match fetched.result {
            Ok(pages) => pages,
            Err(error) => return self.failed(&fetched.target, fetched.epoch, &error),
        };
        let mut inner = cell.lock();
        inner.fetching = None;
        match inner.merger.load_base_pages(fetched.epoch, &pages) {
            Ok(applied) => {
                self.shared.metrics.base_fetches.inc(&fetched.target, "ok");
                self.retries.succeeded(&fetched.target);
                let counts = applied.replayed;
                cell.counters.replayed(&counts);
                inner.dirty = true;
                inner.changed_at = SystemTime::now();
                let seq = inner.merger.change_seq();
                inner.remember(RingEntry::Full(seq));
                tracing::info!(target_id = %fetched.target, pages = pages.len(), entities = applied.entities, version = ?applied.version, applied = counts.applied, stale = counts.stale, "base state loaded");
                drop(inner);
                cell.publish(StreamItem::Full(seq));
                if applied.resnapshot.is_some() {
                    self.shared.want_fetch(cell.clone());
                }
            }
            Err(sluice_merge::BaseError::Superseded { .. }) => {}
            Err(error) => {
                drop(inner);
                self.failed(&fetched.target, fetched.epoch, &error.into());
            }
        }
    }

    fn failed(&mut self, target: &str, epoch: u64, error: &BaseFetchError) {
        self.shared.metrics.base_fetches.inc(target, "error");
        let delay = self
            .retries
            .failed(target, epoch, Instant::now(), &mut rand::rng());
        tracing::warn!(target_id = %target, kind = error.kind(), %error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(0), "base state fetch failed");
    }

    fn start_due_retries(&mut self, watermark: &dyn Fn(&str, i32) -> Option<i64>) {
        for (target, epoch) in self.retries.take_due(Instant::now()) {
            let Some(cell) = self.shared.store.get(&target) else {
                continue;
            };
            let current = {
                let inner = cell.lock();
                !inner.merger.is_synced() && inner.merger.epoch() == epoch
            };
            if current {
                self.spawn(&cell, epoch, watermark);
            }
        }
    }
}
