//! The consumer loop: one thread owns the group consumer, offers each record to its target's
//! merger, applies base states as their fetches complete, writes snapshots and commits offsets.
//! Rebalance callbacks run on this same thread (inside `poll`), so a revoked partition's targets
//! are snapshotted and committed before another aggregator can take them, and an assigned
//! partition's targets are restored from the state topic before its first record is offered.
//!
//! Invariant: the committed offset of a partition never passes the `next_offset` of the last
//! snapshot written for any target in it, so a restart replays every delta not in a snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak, mpsc};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use sluice_client::{Client, ClientOptions};
use sluice_config::{ProxyConfig, TargetProxy};
use sluice_merge::{Input, Merger, Outcome};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchQueue, RawRecord};
use crate::metrics::Metrics;
use crate::snapshot::{SnapshotRecord, write_file};
use crate::store::{Cell, Inner, RingEntry, Store, StreamItem, TargetDef};
use sluice_publish::{partition_for, pool_home};

/// Largest base-state document accepted.
const MAX_BASE_BYTES: usize = 256 * 1024 * 1024;
/// How long a snapshot round waits for Kafka's acknowledgements.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the state topic at an assignment may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one producer poll waits while a snapshot round waits for acknowledgements.
const ACK_POLL: Duration = Duration::from_millis(10);
/// How long shutdown waits for dead letters still in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often consumer lag is refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// Records taken from the batch queue per call.
const BATCH: usize = 1024;
/// Records handled per round before the loop serves rebalances, base fetches and snapshots.
const ROUND: usize = 4096;
/// How long an idle round waits for records.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Everything the consumer thread, the rebalance callbacks and the HTTP handlers share.
pub struct Shared {
    /// Configured targets by id.
    pub defs: HashMap<String, Arc<TargetDef>>,
    /// Proxy pools (for base fetches of pooled targets).
    pub pools: BTreeMap<String, Vec<ProxyConfig>>,
    /// Owned targets.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// The compacted snapshot topic.
    pub state_topic: String,
    /// Where file snapshots go, if anywhere.
    pub snapshot_dir: Option<PathBuf>,
    /// Where malformed deltas go, if anywhere.
    pub dead_letter: Option<String>,
    /// Producer for snapshots and dead letters, polled by the consumer thread (no thread of its
    /// own: rust-rdkafka's polling thread spins through the last millisecond of every 100 ms
    /// poll, about 1% of a core).
    pub producer: BaseProducer<Deliveries>,
    /// The id the next snapshot record is sent with (0 is for dead letters).
    next_delivery: AtomicUsize,
    /// Settings for reading the state topic.
    pub reader: ClientConfig,
    /// The runtime base fetches run on (and snapshot acknowledgements are awaited with).
    pub runtime: tokio::runtime::Handle,
    /// Partitions assigned now.
    assigned: Mutex<BTreeSet<(String, i32)>>,
    /// Whether the group assigned partitions (possibly none) at least once.
    assigned_once: AtomicBool,
    /// Targets whose merger may want a base fetch.
    fetch_queue: Mutex<Vec<Arc<Cell>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the aggregator is not ready, or `None` when it is.
pub fn not_ready(shared: &Shared) -> Option<String> {
    if !shared.assigned_once.load(Ordering::Acquire) {
        return Some("no partitions assigned by the consumer group yet".to_owned());
    }
    let syncing: Vec<String> = shared
        .store
        .all()
        .iter()
        .filter(|c| !c.lock().merger.has_state())
        .map(|c| c.def.id().to_owned())
        .collect();
    if syncing.is_empty() {
        None
    } else {
        Some(format!("targets still syncing: {}", syncing.join(", ")))
    }
}

impl Shared {
    /// Builds the shared part.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        defs: HashMap<String, Arc<TargetDef>>,
        pools: BTreeMap<String, Vec<ProxyConfig>>,
        metrics: Metrics,
        state_topic: String,
        snapshot_dir: Option<PathBuf>,
        dead_letter: Option<String>,
        producer: BaseProducer<Deliveries>,
        reader: ClientConfig,
        runtime: tokio::runtime::Handle,
    ) -> Shared {
        Shared {
            defs,
            pools,
            store: Store::default(),
            metrics,
            state_topic,
            snapshot_dir,
            dead_letter,
            producer,
            next_delivery: AtomicUsize::new(1),
            reader,
            runtime,
            assigned: Mutex::new(BTreeSet::new()),
            assigned_once: AtomicBool::new(false),
            fetch_queue: Mutex::new(Vec::new()),
        }
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        lock(&self.assigned).iter().cloned().collect()
    }

    fn new_cell(&self, def: &Arc<TargetDef>, inner: Inner) -> Arc<Cell> {
        let counters = self.metrics.delta_counters(def.id());
        let cell = Arc::new(Cell::new(def.clone(), inner, counters));
        self.store.insert(cell.clone());
        cell
    }

    /// A target without a snapshot: it fetches its base state and takes records from `start`
    /// (the partition's start offset, or the first record's offset; -1 when unknown).
    fn fresh_cell(&self, def: &Arc<TargetDef>, partition: i32, start: i64) -> Arc<Cell> {
        let cell = self.new_cell(
            def,
            Inner {
                merger: Merger::new(def.spec.clone()),
                partition,
                next_offset: start,
                snapshot_offset: None,
                dirty: false,
                changed_at: SystemTime::now(),
                ring: Default::default(),
                fetching: None,
            },
        );
        lock(&self.fetch_queue).push(cell.clone());
        cell
    }

    /// Restores the targets of newly assigned partitions (from the state topic), and starts
    /// fresh the configured targets of those partitions that have no snapshot.
    fn restore(&self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let parts: BTreeSet<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        tracing::info!(partitions = ?parts, "partitions assigned");
        lock(&self.assigned).extend(parts.iter().cloned());
        if !parts.is_empty() {
            let starts = pin_start_offsets(consumer, tpl);
            let snapshots = match sluice_publish::read_compacted_blocking(
                self.reader.clone(),
                &self.state_topic,
                RESTORE_TIMEOUT,
            ) {
                Ok(table) => table,
                Err(sluice_publish::CheckpointReadError::TopicMissing { .. }) => HashMap::new(),
                Err(error) => {
                    tracing::error!(%error, topic = %self.state_topic, "cannot read the state topic: assigned targets start from fresh base states");
                    HashMap::new()
                }
            };
            let mut restored = BTreeSet::new();
            for (id, bytes) in snapshots {
                let Some(def) = self.defs.get(&id) else {
                    continue;
                };
                let record = match SnapshotRecord::decode(&bytes) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::warn!(target_id = %id, %error, "skipping unreadable snapshot record");
                        continue;
                    }
                };
                let key = (record.topic.clone(), record.partition);
                if !parts.contains(&key) || record.topic != def.target.topic {
                    continue;
                }
                if let Some(start) = starts.get(&key)
                    && record.next_offset < *start
                {
                    // Committed offsets never pass a snapshot its owner wrote, so this one was
                    // written by an owner that had already lost the partition: replaying from
                    // `start` would skip records it lacks.
                    tracing::warn!(target_id = %id, next_offset = record.next_offset, start, "snapshot is older than the partition's start offset: fetching a fresh base state instead");
                    continue;
                }
                let changed_at = humantime::parse_rfc3339(&record.written_at)
                    .unwrap_or_else(|_| SystemTime::now());
                let merger = Merger::restore(def.spec.clone(), record.state);
                tracing::info!(target_id = %id, partition = record.partition, next_offset = record.next_offset, entities = merger.len(), version = ?merger.version(), "target restored from its snapshot");
                self.new_cell(
                    def,
                    Inner {
                        merger,
                        partition: record.partition,
                        next_offset: record.next_offset,
                        snapshot_offset: Some(record.next_offset),
                        dirty: false,
                        changed_at,
                        ring: Default::default(),
                        fetching: None,
                    },
                );
                restored.insert(id);
            }
            let mut counts: HashMap<String, i32> = HashMap::new();
            for def in self.defs.values() {
                if restored.contains(def.id()) {
                    continue;
                }
                let topic = &def.target.topic;
                if !parts.iter().any(|(t, _)| t == topic) {
                    continue;
                }
                let count = *counts
                    .entry(topic.clone())
                    .or_insert_with(|| partition_count(consumer, topic));
                let partition = partition_for(def.id(), count);
                let key = (topic.clone(), partition);
                if parts.contains(&key) {
                    tracing::info!(target_id = %def.id(), partition, "target assigned without a snapshot: fetching its base state");
                    self.fresh_cell(def, partition, starts.get(&key).copied().unwrap_or(-1));
                }
            }
        }
        self.assigned_once.store(true, Ordering::Release);
    }

    /// Snapshots and commits the targets of revoked partitions, then lets them go.
    fn release(&self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let parts: BTreeSet<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if consumer.assignment_lost() {
            // The group moved on without us (session timeout): another aggregator may already
            // own these targets, so writing snapshots or committing now could only go backwards.
            tracing::warn!(partitions = ?parts, "partitions lost (consumer group session timed out): dropping their targets without a final snapshot; the next owner replays from the last committed snapshot");
            // Not ready again until the group assigns partitions anew.
            self.assigned_once.store(false, Ordering::Release);
        } else {
            tracing::info!(partitions = ?parts, "partitions revoked: writing final snapshots");
            self.snapshot_round(consumer, Some(&parts), CommitMode::Sync);
        }
        let removed = self
            .store
            .remove_where(|c| parts.contains(&(c.def.target.topic.clone(), c.lock().partition)));
        for cell in removed {
            self.metrics.forget_target(cell.def.id());
        }
        lock(&self.assigned).retain(|p| !parts.contains(p));
    }

    /// Writes a snapshot of every synced target (of `only`'s partitions, when given) that moved
    /// since its last one, waits for Kafka, then commits each partition's safe offset.
    pub fn snapshot_round(
        &self,
        consumer: &BaseConsumer<Ctx>,
        only: Option<&BTreeSet<(String, i32)>>,
        mode: CommitMode,
    ) {
        if consumer.assignment_lost() {
            return;
        }
        let in_scope = |cell: &Cell, partition: i32| {
            only.is_none_or(|o| o.contains(&(cell.def.target.topic.clone(), partition)))
        };
        let written_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut pending = Vec::new();
        let cells = self.store.all();
        for cell in &cells {
            let (record, next_offset) = {
                let inner = cell.lock();
                if !in_scope(cell, inner.partition) || !inner.merger.is_synced() {
                    continue;
                }
                if !inner.dirty && inner.snapshot_offset == Some(inner.next_offset) {
                    continue;
                }
                if inner.next_offset < 0 {
                    continue;
                }
                let Some(state) = inner.merger.export() else {
                    continue;
                };
                (
                    SnapshotRecord {
                        target: cell.def.id().to_owned(),
                        topic: cell.def.target.topic.clone(),
                        partition: inner.partition,
                        next_offset: inner.next_offset,
                        written_at: written_at.clone(),
                        state,
                    },
                    inner.next_offset,
                )
            };
            let bytes = record.encode();
            if let Some(dir) = &self.snapshot_dir {
                match write_file(dir, cell.def.id(), &bytes) {
                    Ok(_) => self
                        .metrics
                        .snapshots_written
                        .with_label_values(&["file"])
                        .inc(),
                    Err(error) => {
                        self.metrics
                            .snapshot_errors
                            .with_label_values(&["file"])
                            .inc();
                        tracing::warn!(target_id = %cell.def.id(), dir = %dir.display(), %error, "writing the snapshot file failed");
                    }
                }
            }
            let id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
            let sent = self.producer.send(
                BaseRecord::with_opaque_to(&self.state_topic, id)
                    .key(cell.def.id())
                    .payload(&bytes),
            );
            match sent {
                Ok(()) => pending.push((cell.clone(), next_offset, id)),
                Err((error, _)) => {
                    self.metrics
                        .snapshot_errors
                        .with_label_values(&["kafka"])
                        .inc();
                    tracing::warn!(target_id = %cell.def.id(), %error, "queueing the snapshot failed");
                }
            }
        }
        if !pending.is_empty() {
            let deadline = Instant::now() + SNAPSHOT_ACK_TIMEOUT;
            let ids: Vec<usize> = pending.iter().map(|(_, _, id)| *id).collect();
            while !self.producer.context().all_done(&ids) && Instant::now() < deadline {
                self.producer.poll(ACK_POLL);
            }
            let mut results = self.producer.context().take();
            for (cell, next_offset, id) in pending {
                match results.remove(&id) {
                    Some(Ok(())) => {
                        self.metrics
                            .snapshots_written
                            .with_label_values(&["kafka"])
                            .inc();
                        let mut inner = cell.lock();
                        inner.snapshot_offset = Some(next_offset);
                        if inner.next_offset == next_offset {
                            inner.dirty = false;
                        }
                    }
                    Some(Err(error)) => {
                        self.metrics
                            .snapshot_errors
                            .with_label_values(&["kafka"])
                            .inc();
                        tracing::warn!(target_id = %cell.def.id(), %error, "snapshot not written; the committed offset stays behind it");
                    }
                    None => {
                        self.metrics
                            .snapshot_errors
                            .with_label_values(&["kafka"])
                            .inc();
                        tracing::warn!(target_id = %cell.def.id(), "snapshot not acknowledged in time; the committed offset stays behind it");
                    }
                }
            }
        }
        self.commit(consumer, &cells, only, mode);
    }

    /// Commits, per partition, the smallest snapshot offset of its targets.
    fn commit(
        &self,
        consumer: &BaseConsumer<Ctx>,
        cells: &[Arc<Cell>],
        only: Option<&BTreeSet<(String, i32)>>,
        mode: CommitMode,
    ) {
        let mut safe: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for cell in cells {
            let inner = cell.lock();
            let key = (cell.def.target.topic.clone(), inner.partition);
            if only.is_some_and(|o| !o.contains(&key)) {
                continue;
            }
            if let Some(offset) = inner.snapshot_offset {
                let entry = safe.entry(key).or_insert(offset);
                *entry = (*entry).min(offset);
            }
        }
        if safe.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &safe {
            if let Err(error) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(%error, "cannot build the offset commit");
                return;
            }
        }
        if let Err(error) = consumer.commit(&tpl, mode) {
            tracing::warn!(%error, "committing offsets failed; the next round tries again");
        } else {
            tracing::debug!(offsets = ?safe, "offsets committed");
        }
    }

    fn take_fetch_queue(&self) -> Vec<Arc<Cell>> {
        std::mem::take(&mut *lock(&self.fetch_queue))
    }
}

/// Commits the current high watermark for assigned partitions that have no committed offset
/// yet, before the assignment takes effect. Without it the consumer would resolve `latest`
/// lazily, possibly after a base state was fetched, and skip the deltas in between (continuity
/// would catch that as a gap, at the price of a second fetch). With it, consumption starts no
/// later than any base fetch this assignment triggers.
///
/// Returns each partition's start offset where known (committed, or pinned).
fn pin_start_offsets(
    consumer: &BaseConsumer<Ctx>,
    tpl: &TopicPartitionList,
) -> HashMap<(String, i32), i64> {
    let mut starts = HashMap::new();
    let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
        Ok(committed) => committed,
        Err(error) => {
            tracing::warn!(%error, "cannot read committed offsets at assignment");
            return starts;
        }
    };
    let mut pins = TopicPartitionList::new();
    for element in committed.elements() {
        let key = (element.topic().to_owned(), element.partition());
        if let Offset::Offset(offset) = element.offset() {
            starts.insert(key, offset);
            continue;
        }
        match consumer.fetch_watermarks(
            element.topic(),
            element.partition(),
            Duration::from_secs(10),
        ) {
            Ok((_, high)) => {
                let _ = pins.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(high),
                );
                starts.insert(key, high);
            }
            Err(error) => {
                tracing::warn!(topic = element.topic(), partition = element.partition(), %error, "cannot read the high watermark at assignment")
            }
        }
    }
    if pins.count() == 0 {
        return starts;
    }
    match consumer.commit(&pins, CommitMode::Sync) {
        Ok(()) => tracing::debug!(offsets = ?pins, "start offsets pinned at the high watermark"),
        Err(error) => tracing::warn!(%error, "cannot pin start offsets at assignment"),
    }
    starts
}

fn partition_count(consumer: &BaseConsumer<Ctx>, topic: &str) -> i32 {
    match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(1))
            .unwrap_or(1),
        Err(error) => {
            tracing::warn!(topic, %error, "cannot read the topic's partition count; assuming 1");
            1
        }
    }
}

/// The producer's context: the delivery result of each snapshot record, by the id it was sent
/// with, until the round that sent it takes them. Dead letters (id 0) are only logged.
#[derive(Default)]
pub struct Deliveries {
    results: Mutex<HashMap<usize, Result<(), String>>>,
}

impl Deliveries {
    fn all_done(&self, ids: &[usize]) -> bool {
        let results = lock(&self.results);
        ids.iter().all(|id| results.contains_key(id))
    }

    /// Everything reported so far (late reports of an earlier round included, which no one
    /// asks for again).
    fn take(&self) -> HashMap<usize, Result<(), String>> {
        std::mem::take(&mut *lock(&self.results))
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.to_string()),
        };
        if id == 0 {
            if let Err(error) = outcome {
                tracing::warn!(%error, "dead-letter record not written");
            }
            return;
        }
        lock(&self.results).insert(id, outcome);
    }
}

/// The consumer's context: rebalances go to [`Shared`].
pub struct Ctx {
    /// The shared state.
    pub shared: Arc<Shared>,
    /// The engine's batch queue, which assigned partitions forward their records to. Weak: the
    /// engine owns it and drops it before the consumer.
    queue: OnceLock<Weak<BatchQueue>>,
}

impl Ctx {
    /// A context around the shared state.
    pub fn new(shared: Arc<Shared>) -> Ctx {
        Ctx {
            shared,
            queue: OnceLock::new(),
        }
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Before the assignment starts fetching (librdkafka keeps a forwarding the
                // application set), so every record of these partitions takes the batch path.
                if let Some(queue) = self.queue.get().and_then(Weak::upgrade) {
                    for element in tpl.elements() {
                        if !queue.forward(element.topic(), element.partition()) {
                            tracing::warn!(
                                topic = element.topic(),
                                partition = element.partition(),
                                "cannot forward the partition to the batch queue: its records come through the consumer's queue"
                            );
                        }
                    }
                }
                self.shared.restore(consumer, tpl)
            }
            Rebalance::Revoke(tpl) => self.shared.release(consumer, tpl),
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
        }
    }
}

/// A finished base fetch.
struct Fetched {
    target: String,
    epoch: u64,
    result: Result<Bytes, String>,
}

/// The loop's own state.
pub struct Engine {
    shared: Arc<Shared>,
    /// Declared before `consumer`, so it is destroyed before the consumer's client.
    queue: Option<Arc<BatchQueue>>,
    consumer: BaseConsumer<Ctx>,
    fetched_tx: mpsc::Sender<Fetched>,
    fetched_rx: mpsc::Receiver<Fetched>,
    retries: Vec<(Instant, String, u64)>,
    failures: HashMap<String, u32>,
    snapshot_interval: Duration,
    malformed_logged: std::cell::RefCell<HashMap<String, u64>>,
    /// The cell of the last record handled.
    last_cell: std::cell::RefCell<Option<Arc<Cell>>>,
}

impl Engine {
    /// An engine around a subscribed consumer.
    pub fn new(
        shared: Arc<Shared>,
        consumer: BaseConsumer<Ctx>,
        snapshot_interval: Duration,
    ) -> Engine {
        let (fetched_tx, fetched_rx) = mpsc::channel();
        // SAFETY of the queue's contract: the engine owns both and drops the queue first.
        #[allow(unsafe_code)]
        let queue = unsafe { BatchQueue::new(consumer.client().native_ptr()) }.map(Arc::new);
        match &queue {
            Some(queue) => {
                let _ = consumer.context().queue.set(Arc::downgrade(queue));
            }
            None => tracing::warn!(
                "cannot create the batch queue: records come through the consumer's queue"
            ),
        }
        Engine {
            shared,
            queue,
            consumer,
            fetched_tx,
            fetched_rx,
            retries: Vec::new(),
            failures: HashMap::new(),
            snapshot_interval,
            malformed_logged: Default::default(),
            last_cell: Default::default(),
        }
    }

    /// Runs until `shutdown`, then writes final snapshots, commits and leaves the group.
    pub fn run(mut self, shutdown: CancellationToken) {
        let mut next_snapshot = Instant::now() + self.snapshot_interval;
        let mut next_lag = Instant::now() + LAG_INTERVAL;
        let mut batch = Batch::with_capacity(BATCH);
        while !shutdown.is_cancelled() {
            self.consume_round(&mut batch);
            // Delivery reports of dead letters (snapshot rounds poll for their own).
            self.shared.producer.poll(Duration::ZERO);
            self.start_fetches();
            while let Ok(fetched) = self.fetched_rx.try_recv() {
                self.base_arrived(fetched);
            }
            self.start_fetches();
            self.due_retries();
            let now = Instant::now();
            if now >= next_snapshot {
                self.shared
                    .snapshot_round(&self.consumer, None, CommitMode::Async);
                next_snapshot = Instant::now() + self.snapshot_interval;
            }
            if now >= next_lag {
                self.update_lag();
                next_lag = now + LAG_INTERVAL;
            }
        }
        tracing::info!("stopping: writing final snapshots");
        self.shared
            .snapshot_round(&self.consumer, None, CommitMode::Sync);
        self.consumer.unsubscribe();
        // Let the revocation run (it finds nothing new to snapshot) before the consumer closes.
        let _ = self.consumer.poll(Duration::from_millis(100));
        for cell in self.shared.store.all() {
            cell.retire();
        }
        if let Err(error) = self.shared.producer.flush(FLUSH_TIMEOUT) {
            tracing::warn!(%error, "dead letters still in flight at shutdown");
        }
        drop(batch);
        // The queue goes before the consumer's client (field order does the same on a panic).
        self.queue = None;
    }

    /// Serves the consumer's own queue (rebalances, commits, errors, and the records of any
    /// partition not forwarded), then takes up to [`ROUND`] records from the batch queue,
    /// waiting up to [`IDLE_WAIT`] for the first when the consumer's queue had nothing.
    fn consume_round(&self, batch: &mut Batch) {
        let mut wait = if self.queue.is_some() {
            Duration::ZERO
        } else {
            IDLE_WAIT
        };
        let mut budget = ROUND;
        // One clock read per call: "as of" is exact to within a round.
        let mut now = SystemTime::now();
        while budget > 0 {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    if wait > Duration::ZERO {
                        now = SystemTime::now();
                    }
                    self.handle(&message, now)
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consumer error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
            budget -= 1;
        }
        let Some(queue) = &self.queue else {
            return;
        };
        let mut wait = if budget == ROUND {
            IDLE_WAIT
        } else {
            Duration::ZERO
        };
        while budget > 0 {
            let n = queue.consume(wait, batch);
            if n == 0 {
                break;
            }
            if wait > Duration::ZERO {
                now = SystemTime::now();
            }
            batch.drain(|record| match record.error() {
                None => self.handle(&record, now),
                Some(error) => tracing::warn!(
                    topic = record.topic(),
                    partition = record.partition(),
                    %error,
                    "kafka consumer error"
                ),
            });
            budget = budget.saturating_sub(n);
            wait = Duration::ZERO;
        }
    }

    fn handle<R: Record>(&self, message: &R, now: SystemTime) {
        let mut target: Option<&str> = None;
        let mut id: Option<&str> = None;
        let mut event = "message";
        let mut connection = None;
        let mut resume = None;
        // Names first: only the headers we read are decoded.
        message.for_each_header(|name, value| match name {
            b"sluice.target" => target = text(value),
            b"sse.id" => id = text(value).filter(|v| !v.is_empty()),
            b"sse.event" => event = text(value).unwrap_or("message"),
            b"sluice.connection" => connection = text(value).and_then(|v| v.parse().ok()),
            b"sluice.resume" => resume = Some(text(value).unwrap_or("")),
            _ => {}
        });
        let target = target.or_else(|| message.key().and_then(|k| std::str::from_utf8(k).ok()));
        let Some(target) = target else {
            self.shared
                .metrics
                .skipped
                .with_label_values(&["unknown_target"])
                .inc();
            return;
        };
        // Consecutive records are usually the same target's: skip the map lookup then.
        let cached = self
            .last_cell
            .borrow()
            .as_ref()
            .filter(|c| c.def.id() == target && !c.is_retired())
            .cloned();
        let cell = match cached.or_else(|| self.shared.store.get(target)) {
            Some(cell) => cell,
            None => {
                let Some(def) = self.shared.defs.get(target).cloned() else {
                    self.shared
                        .metrics
                        .skipped
                        .with_label_values(&["unknown_target"])
                        .inc();
                    return;
                };
                if def.target.topic != message.topic() {
                    self.shared
                        .metrics
                        .skipped
                        .with_label_values(&["unknown_target"])
                        .inc();
                    return;
                }
                // A target in an assigned partition that the partitioner did not predict (the
                // worker used another partitioner): adopt it.
                tracing::info!(target_id = %target, partition = message.partition(), "first record of a target without a snapshot: fetching its base state");
                self.shared
                    .fresh_cell(&def, message.partition(), message.offset())
            }
        };
        let same = self
            .last_cell
            .borrow()
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &cell));
        if !same {
            *self.last_cell.borrow_mut() = Some(cell.clone());
        }
        let offset = message.offset();
        let data = message.payload();
        let mut inner = cell.lock();
        if offset < inner.next_offset {
            self.shared
                .metrics
                .skipped
                .with_label_values(&["already_applied"])
                .inc();
            return;
        }
        inner.next_offset = offset + 1;
        let input = Input {
            id,
            event,
            data,
            connection,
            resume,
        };
        // Checked under the cell's lock: a `/stream` client counts itself before it locks the
        // cell to read its starting state, so it either sees this change in that state or is
        // counted here and is sent it.
        let listening = cell.has_subscribers();
        let outcome = inner.merger.offer_with(&input, listening);
        match outcome {
            Outcome::Applied(change) => {
                cell.counters[0].inc();
                inner.dirty = true;
                inner.changed_at = now;
                if listening {
                    inner.remember(RingEntry::Change(change.seq, Arc::clone(&change.key)));
                    drop(inner);
                    cell.publish(StreamItem::Change(Arc::new(change)));
                } else {
                    // Nobody to send it to: the ring takes the key, and the change is gone.
                    inner.remember(RingEntry::Change(change.seq, change.key));
                }
            }
            Outcome::Buffered => cell.counters[1].inc(),
            Outcome::Stale => cell.counters[2].inc(),
            Outcome::Duplicate => cell.counters[3].inc(),
            Outcome::Ignored => cell.counters[4].inc(),
            Outcome::Malformed(error) => {
                cell.counters[5].inc();
                inner.dirty = true;
                drop(inner);
                let logged = {
                    let mut counts = self.malformed_logged.borrow_mut();
                    let count = counts.entry(target.to_owned()).or_default();
                    *count += 1;
                    *count
                };
                if logged <= 100 || logged.is_power_of_two() {
                    tracing::warn!(target_id = %target, topic = message.topic(), partition = message.partition(), offset, event, kind = error.kind(), %error, malformed_so_far = logged, "malformed delta skipped");
                }
                self.dead_letter(message, target, &error.to_string());
            }
            Outcome::Resnapshot(reason) => {
                cell.counters[1].inc();
                drop(inner);
                tracing::info!(target_id = %target, offset, reason = reason.as_str(), "fresh base state needed");
                lock(&self.shared.fetch_queue).push(cell.clone());
            }
        }
    }

    fn dead_letter<R: Record>(&self, message: &R, target: &str, error: &str) {
        let Some(topic) = &self.shared.dead_letter else {
            return;
        };
        let mut original = Vec::new();
        message.for_each_header(|name, value| {
            original.push((String::from_utf8_lossy(name), value));
        });
        let mut headers = OwnedHeaders::new_with_capacity(original.len() + 2);
        for (key, value) in &original {
            headers = headers.insert(Header { key, value: *value });
        }
        let source = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        headers = headers
            .insert(Header {
                key: "sluice.error",
                value: Some(error),
            })
            .insert(Header {
                key: "sluice.source",
                value: Some(&source),
            });
        let record = BaseRecord::with_opaque_to(topic, 0)
            .key(target)
            .payload(message.payload())
            .headers(headers);
        match self.shared.producer.send(record) {
            Ok(()) => self.shared.metrics.dead_letters.inc(),
            Err((error, _)) => tracing::warn!(%error, "dead-letter record not queued"),
        }
    }

    fn start_fetches(&mut self) {
        for cell in self.shared.take_fetch_queue() {
            let request = cell.lock().merger.fetch_request();
            if let Some(request) = request {
                self.shared
                    .metrics
                    .resnapshots
                    .with_label_values(&[cell.def.id(), request.reason.as_str()])
                    .inc();
                self.spawn_fetch(&cell, request.epoch);
            }
        }
    }

    fn spawn_fetch(&self, cell: &Arc<Cell>, epoch: u64) {
        cell.lock().fetching = Some(epoch);
        let def = cell.def.clone();
        let pools = self.shared.pools.clone();
        let tx = self.fetched_tx.clone();
        self.shared.runtime.spawn(async move {
            let result = match base_client(&def, &pools) {
                Ok(client) => client
                    .fetch_document(def.aggregate.base_timeout, MAX_BASE_BYTES)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error),
            };
            let _ = tx.send(Fetched {
                target: def.id().to_owned(),
                epoch,
                result,
            });
        });
    }

    fn base_arrived(&mut self, fetched: Fetched) {
        let Some(cell) = self.shared.store.get(&fetched.target) else {
            return;
        };
        let metrics = &self.shared.metrics;
        let body = match fetched.result {
            Ok(body) => body,
            Err(error) => {
                metrics
                    .base_fetches
                    .with_label_values(&[&fetched.target, "error"])
                    .inc();
                self.retry_later(&fetched.target, fetched.epoch, &error);
                return;
            }
        };
        let mut inner = cell.lock();
        inner.fetching = None;
        match inner.merger.load_base(fetched.epoch, &body) {
            Ok(applied) => {
                metrics
                    .base_fetches
                    .with_label_values(&[&fetched.target, "ok"])
                    .inc();
                self.failures.remove(&fetched.target);
                let counts = applied.replayed;
                cell.counters[0].inc_by(counts.applied);
                cell.counters[2].inc_by(counts.stale);
                cell.counters[3].inc_by(counts.duplicate);
                cell.counters[4].inc_by(counts.ignored);
                cell.counters[5].inc_by(counts.malformed);
                inner.dirty = true;
                inner.changed_at = SystemTime::now();
                let seq = inner.merger.change_seq();
                inner.remember(RingEntry::Full(seq));
                let item = StreamItem::Full(seq);
                tracing::info!(target_id = %fetched.target, entities = applied.entities, version = ?applied.version, applied = counts.applied, stale = counts.stale, "base state loaded");
                let again = applied.resnapshot.is_some();
                drop(inner);
                cell.publish(item);
                if again {
                    lock(&self.shared.fetch_queue).push(cell.clone());
                }
            }
            Err(sluice_merge::BaseError::Superseded { .. }) => {}
            Err(error) => {
                drop(inner);
                metrics
                    .base_fetches
                    .with_label_values(&[&fetched.target, "error"])
                    .inc();
                self.retry_later(&fetched.target, fetched.epoch, &error.to_string());
            }
        }
    }

    fn retry_later(&mut self, target: &str, epoch: u64, error: &str) {
        let failures = self.failures.entry(target.to_owned()).or_default();
        *failures += 1;
        let delay = Duration::from_millis(500)
            .saturating_mul(1 << (*failures).min(6))
            .min(Duration::from_secs(30));
        tracing::warn!(target_id = %target, %error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(0), "base state fetch failed");
        self.retries
            .push((Instant::now() + delay, target.to_owned(), epoch));
    }

    fn due_retries(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.retries.drain(..).partition(|(at, _, _)| *at <= now);
        self.retries = later;
        for (_, target, epoch) in due {
            let Some(cell) = self.shared.store.get(&target) else {
                continue;
            };
            let current = {
                let inner = cell.lock();
                !inner.merger.is_synced() && inner.merger.epoch() == epoch
            };
            if current {
                self.spawn_fetch(&cell, epoch);
            }
        }
    }

    fn update_lag(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            match self.consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(1),
            ) {
                Ok((_, high)) => self
                    .shared
                    .metrics
                    .consumer_lag
                    .with_label_values(&[element.topic(), &element.partition().to_string()])
                    .set((high - position).max(0)),
                Err(error) => tracing::debug!(%error, "cannot read watermarks for lag"),
            }
        }
    }
}

/// A header value as text (`None` when absent or not UTF-8).
/// What the loop reads of a consumed record: rust-rdkafka's message (from the consumer's queue)
/// or one of a batch.
trait Record {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    /// The payload ("" when there is none).
    fn payload(&self) -> &[u8];
    /// Calls `f(name, value)` for each header, in order.
    fn for_each_header<'s>(&'s self, f: impl FnMut(&'s [u8], Option<&'s [u8]>));
}

impl Record for BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> &[u8] {
        Message::payload(self).unwrap_or_default()
    }
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Option<&'s [u8]>)) {
        if let Some(headers) = self.headers() {
            for header in headers.iter() {
                f(header.key.as_bytes(), header.value);
            }
        }
    }
}

impl Record for RawRecord<'_> {
    fn topic(&self) -> &str {
        RawRecord::topic(self)
    }
    fn partition(&self) -> i32 {
        RawRecord::partition(self)
    }
    fn offset(&self) -> i64 {
        RawRecord::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        RawRecord::key(self)
    }
    fn payload(&self) -> &[u8] {
        RawRecord::payload(self)
    }
    fn for_each_header<'s>(&'s self, f: impl FnMut(&'s [u8], Option<&'s [u8]>)) {
        RawRecord::for_each_header(self, f)
    }
}

fn text(value: Option<&[u8]>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v).ok())
}

/// The client for one base-state fetch: the target's headers and auth plus the `aggregate.base`
/// headers, its proxy (a pool member chosen by the target id) and TLS roots; secrets read now.
fn base_client(
    def: &TargetDef,
    pools: &BTreeMap<String, Vec<ProxyConfig>>,
) -> Result<Client, String> {
    let target = &def.target;
    let mut headers = target.resolve_headers().map_err(|e| e.to_string())?;
    for (name, value) in def
        .aggregate
        .resolve_base_headers()
        .map_err(|e| e.to_string())?
        .iter()
    {
        headers.insert(name.clone(), value.clone());
    }
    let proxy = match &target.proxy {
        None => None,
        Some(TargetProxy::Direct(proxy)) => Some(proxy.resolve_url().map_err(|e| e.to_string())?),
        Some(TargetProxy::Pool(name)) => {
            let members = pools.get(name).map(Vec::as_slice).unwrap_or_default();
            match members.get(pool_home(target.id.as_str(), members.len())) {
                Some(proxy) => Some(proxy.resolve_url().map_err(|e| e.to_string())?),
                None => return Err(format!("proxy pool {name:?} has no member")),
            }
        }
    };
    let options = ClientOptions {
        headers,
        proxy,
        connect_timeout: target.connect_timeout,
        max_redirects: usize::try_from(target.max_redirects).unwrap_or(usize::MAX),
        root_certificates_pem: target.root_certificates_pem.clone(),
        ..ClientOptions::default()
    };
    Client::new(def.aggregate.base_url.clone(), options).map_err(|e| e.to_string())
}
