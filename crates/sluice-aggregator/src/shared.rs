//! What the consumer thread, the rebalance callbacks and the HTTP handlers share: the
//! configured targets, the owned ones, the metrics, the Kafka handles and a few flags.
//!
//! Data only: it holds state and answers questions about it (`/readyz`). It must not rebalance,
//! snapshot, fetch or handle records; those are the loop's modules (`rebalance`, `snapshot`,
//! `fetch`, `records`), which the HTTP layer never depends on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;
use sluice_config::ProxyConfig;
use sluice_merge::{Merger, ResnapshotReason};

use crate::metrics::Metrics;
use crate::owners::Owners;
use crate::snapshot::Deliveries;
use crate::store::{Cell, Inner, Store, TargetDef};

/// A topic and partition.
pub type TopicPartition = (String, i32);

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
    /// The largest snapshot record value written to it: a larger snapshot is chunked
    /// (`snapshot::chunks`), from the topic's `max.message.bytes`.
    pub snapshot_chunk_bytes: usize,
    /// Where file snapshots go, if anywhere.
    pub snapshot_dir: Option<PathBuf>,
    /// Where malformed deltas go, if anywhere.
    pub dead_letter: Option<String>,
    /// Producer for snapshots and dead letters, polled by the consumer thread (no thread of its
    /// own: rust-rdkafka's polling thread spins through the last millisecond of every 100 ms
    /// poll; measured in docs/BENCHMARKS.md, "No producer polling thread").
    pub producer: BaseProducer<Deliveries>,
    /// The id the next snapshot record is sent with (0 is for dead letters).
    next_delivery: AtomicUsize,
    /// Settings for reading the state topic.
    pub reader: ClientConfig,
    /// The runtime base fetches run on.
    pub runtime: tokio::runtime::Handle,
    /// Which aggregator of the group owns which partition (for routing clients), this one's
    /// claims included.
    pub owners: Owners,
    /// The members topic.
    pub members_topic: String,
    /// The last outcome of each target's deliveries (for the page and `/v1/targets`).
    pub deliveries: crate::delivery::DeliveryStatus,
    /// Partitions assigned now.
    assigned: Mutex<BTreeSet<TopicPartition>>,
    /// Whether the group assigned partitions (possibly none) at least once.
    assigned_once: AtomicBool,
    /// Targets whose merger may want a base fetch.
    fetch_queue: Mutex<Vec<Arc<Cell>>>,
    /// Each events topic's partition count as last read (at an assignment): snapshots record
    /// it, so a later start can tell the topic was repartitioned under them.
    partition_counts: Mutex<HashMap<String, i32>>,
}

/// Locks `m`, poisoned or not (the data behind these locks stays consistent between
/// statements).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        snapshot_chunk_bytes: usize,
        snapshot_dir: Option<PathBuf>,
        dead_letter: Option<String>,
        producer: BaseProducer<Deliveries>,
        reader: ClientConfig,
        runtime: tokio::runtime::Handle,
        members_topic: String,
    ) -> Shared {
        Shared {
            defs,
            pools,
            store: Store::default(),
            metrics,
            state_topic,
            snapshot_chunk_bytes,
            snapshot_dir,
            dead_letter,
            producer,
            next_delivery: AtomicUsize::new(1),
            reader,
            runtime,
            owners: Owners::default(),
            members_topic,
            deliveries: Default::default(),
            assigned: Mutex::new(BTreeSet::new()),
            assigned_once: AtomicBool::new(false),
            fetch_queue: Mutex::new(Vec::new()),
            partition_counts: Mutex::new(HashMap::new()),
        }
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        lock(&self.assigned).iter().cloned().collect()
    }

    /// Adds newly assigned partitions.
    pub fn add_assigned(&self, parts: &BTreeSet<TopicPartition>) {
        lock(&self.assigned).extend(parts.iter().cloned());
        self.owners.claim(parts);
    }

    /// Removes revoked (or lost) partitions.
    pub fn remove_assigned(&self, parts: &BTreeSet<TopicPartition>) {
        lock(&self.assigned).retain(|p| !parts.contains(p));
        self.owners.release(parts);
    }

    /// Records whether the group has assigned partitions since the last loss (`/readyz`).
    pub fn set_assigned_once(&self, assigned: bool) {
        self.assigned_once.store(assigned, Ordering::Release);
    }

    /// The id for the next snapshot record's delivery report.
    pub fn next_delivery_id(&self) -> usize {
        self.next_delivery.fetch_add(1, Ordering::Relaxed)
    }

    /// Remembers `topic`'s partition count.
    pub fn set_partition_count(&self, topic: &str, count: i32) {
        lock(&self.partition_counts).insert(topic.to_owned(), count);
    }

    /// `topic`'s partition count as last read, if it was.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        lock(&self.partition_counts).get(topic).copied()
    }

    /// Adds an owned target around `inner`, with its delta counters.
    pub fn insert_cell(&self, def: &Arc<TargetDef>, inner: Inner) -> Arc<Cell> {
        let counters = self.metrics.delta_counters(def.id());
        let cell = Arc::new(Cell::new(def.clone(), inner, counters));
        self.store.insert(cell.clone());
        cell
    }

    /// Adds a target without a snapshot: it needs a base state and takes records from `start`
    /// (the partition's start offset, or the first record's offset; -1 when unknown).
    /// `deltas_lost`: its snapshot, if any, was unusable because records after it are gone
    /// (the fetch is counted as `offset_out_of_range`, not `initial`).
    pub fn insert_fresh_cell(
        &self,
        def: &Arc<TargetDef>,
        partition: i32,
        start: i64,
        deltas_lost: bool,
    ) -> Arc<Cell> {
        let mut merger = Merger::new(def.spec.clone());
        if deltas_lost {
            merger.deltas_lost(ResnapshotReason::OffsetOutOfRange);
        }
        let cell = self.insert_cell(
            def,
            Inner {
                merger,
                partition,
                placed: false,
                next_offset: start,
                snapshot_offset: None,
                dirty: false,
                changed_at: SystemTime::now(),
                ring: Default::default(),
                fetching: None,
                chunk_keys: Vec::new(),
                generation: 0,
            },
        );
        self.want_fetch(cell.clone());
        cell
    }

    /// Queues `cell` for the loop to ask its merger for a base fetch.
    pub fn want_fetch(&self, cell: Arc<Cell>) {
        lock(&self.fetch_queue).push(cell);
    }

    /// Takes the queued targets.
    pub fn take_fetch_queue(&self) -> Vec<Arc<Cell>> {
        std::mem::take(&mut *lock(&self.fetch_queue))
    }
}
