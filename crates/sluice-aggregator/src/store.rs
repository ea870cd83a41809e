//! The targets this aggregator owns right now, each behind its own lock: the merger, where it
//! is in its partition, and the recent changes that `/stream` clients resume from. Readers take
//! an immutable version of the state ([`crate::versions::StateView`]) under the lock, in O(1),
//! and do everything else after releasing it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use sluice_config::{AggregateConfig, TargetConfig};
use sluice_merge::{Change, Merger};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::metrics::DeltaCounters;
use crate::versions::{Pins, StateView};

/// Changes kept per target for `Last-Event-ID` resumption of `/stream`.
pub const RING: usize = 10_000;

/// Changes a `/stream` client may fall behind (each client's place in the target's broadcast
/// channel); one more and it is disconnected, to resume with `Last-Event-ID`.
pub const STREAM_BUFFER: usize = 1024;

/// A configured target (static for the life of the process).
pub struct TargetDef {
    /// The target file's settings.
    pub target: TargetConfig,
    /// Its `aggregate:` section.
    pub aggregate: AggregateConfig,
    /// The merge rules, shared by every merger of the target.
    pub spec: Arc<sluice_merge::MergeSpec>,
}

impl TargetDef {
    /// The target id.
    pub fn id(&self) -> &str {
        self.target.id.as_str()
    }
}

/// What `/stream` subscribers receive.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// One entity changed.
    Change(Arc<Change>),
    /// The whole state was replaced (a base state loaded); its change sequence.
    Full(u64),
}

impl StreamItem {
    /// The change sequence number the item brings the state to.
    pub fn seq(&self) -> u64 {
        match self {
            StreamItem::Change(change) => change.seq,
            StreamItem::Full(seq) => *seq,
        }
    }
}

/// What the resumption ring keeps of each change: its sequence and the key it changed, not the
/// value (a resuming client is sent the entity's current value). Holding values here would keep
/// up to [`RING`] superseded entities alive per target and force `merge_patch` to copy the entity
/// it patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingEntry {
    /// The entity `key` changed (or was deleted).
    Change(u64, Arc<str>),
    /// The whole state was replaced.
    Full(u64),
}

impl RingEntry {
    /// The change sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            RingEntry::Change(seq, _) | RingEntry::Full(seq) => *seq,
        }
    }
}

/// One owned target's mutable part.
pub struct Inner {
    /// The merge.
    pub merger: Merger,
    /// The events partition the target's records are in.
    pub partition: i32,
    /// Whether `partition` is known (from a snapshot or a record of the target); a fresh
    /// target's partition is the partitioner's prediction until its first record.
    pub placed: bool,
    /// Offset of the next record to offer (records below it were offered already).
    pub next_offset: i64,
    /// `next_offset` of the last snapshot written or restored; the committed offset of the
    /// partition never passes it.
    pub snapshot_offset: Option<i64>,
    /// Whether the state changed since the last snapshot.
    pub dirty: bool,
    /// When the state last changed.
    pub changed_at: SystemTime,
    /// Recent changes, oldest first, for `/stream` resumption.
    pub ring: VecDeque<RingEntry>,
    /// The base fetch in flight: its epoch.
    pub fetching: Option<u64>,
    /// The target's chunk records in the state topic that its next acknowledged snapshot makes
    /// obsolete (tombstoned then): its current snapshot's chunks and any an interrupted write
    /// left behind.
    pub chunk_keys: Vec<String>,
    /// The highest snapshot chunk generation of the target seen or written (0: none).
    pub generation: u64,
}

impl Inner {
    /// Remembers a change (or a whole-state replacement) for resumption.
    pub fn remember(&mut self, entry: RingEntry) {
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
    }
}

/// One owned target.
pub struct Cell {
    /// Its configuration.
    pub def: Arc<TargetDef>,
    /// The state.
    inner: Mutex<Inner>,
    /// Changes for `/stream` subscribers.
    pub changes: broadcast::Sender<StreamItem>,
    /// Cancelled when the target moves away (partition revoked) or the process stops.
    pub gone: CancellationToken,
    /// The same as `gone`, readable with one atomic load (checked per record).
    retired: AtomicBool,
    /// Per-outcome delta counters.
    pub counters: DeltaCounters,
    /// Live [`Listener`]s: read per applied delta with one load (the channel's own count takes
    /// a lock).
    listeners: AtomicUsize,
    /// Random, per cell: a page cursor names the cell it was issued by, so a cursor of a cell
    /// since replaced (or of an earlier process) is refused instead of misread.
    pub incarnation: u64,
    /// Versions page cursors are reading (readers only: the consumer thread never takes it).
    pub pins: Pins,
}

/// A `/stream` client's receiver of a cell's changes, counted in the cell while it lives.
pub struct Listener {
    cell: Arc<Cell>,
    /// The changes sent after it was made.
    pub rx: broadcast::Receiver<StreamItem>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.cell.listeners.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Cell {
    /// A cell around `inner`.
    pub fn new(def: Arc<TargetDef>, inner: Inner, counters: DeltaCounters) -> Cell {
        let (changes, _) = broadcast::channel(STREAM_BUFFER);
        Cell {
            def,
            inner: Mutex::new(inner),
            changes,
            gone: CancellationToken::new(),
            retired: AtomicBool::new(false),
            counters,
            listeners: AtomicUsize::new(0),
            incarnation: rand::random(),
            pins: Pins::default(),
        }
    }

    /// The current state as an immutable version (the lock is held for an O(1) copy of the
    /// map's root and a few numbers); `None` before the target's first complete state.
    pub fn capture(&self) -> Option<StateView> {
        let inner = self.lock();
        inner
            .merger
            .has_state()
            .then(|| StateView::capture(self.def.id(), &inner))
    }

    /// Locks the state (a poisoned lock is still usable: mergers never panic mid-update).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target moved away or the process stops: the cell is no longer fed.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.gone.cancel();
    }

    /// Whether [`Cell::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// A receiver of the changes published from now on. Counted before the caller locks the
    /// cell to read the state it starts from, so a change applied after that read (under the
    /// lock) sees the listener in [`Cell::has_subscribers`].
    pub fn listen(self: &Arc<Self>) -> Listener {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        Listener {
            cell: Arc::clone(self),
            rx: self.changes.subscribe(),
        }
    }

    /// Whether any `/stream` client is listening.
    pub fn has_subscribers(&self) -> bool {
        self.listeners.load(Ordering::SeqCst) > 0
    }

    /// Sends `item` to subscribers (none listening is fine).
    pub fn publish(&self, item: StreamItem) {
        if self.has_subscribers() {
            let _ = self.changes.send(item);
        }
    }
}

/// The owned targets by id.
#[derive(Default)]
pub struct Store {
    cells: RwLock<HashMap<String, Arc<Cell>>>,
}

impl Store {
    /// The cell of `id`, if owned.
    pub fn get(&self, id: &str) -> Option<Arc<Cell>> {
        self.cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every owned cell, sorted by id.
    pub fn all(&self) -> Vec<Arc<Cell>> {
        let mut cells: Vec<_> = self
            .cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        cells.sort_by(|a, b| a.def.id().cmp(b.def.id()));
        cells
    }

    /// Adds (or replaces) a cell.
    pub fn insert(&self, cell: Arc<Cell>) {
        let id = cell.def.id().to_owned();
        let old = self
            .cells
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, cell);
        if let Some(old) = old {
            old.retire();
        }
    }

    /// Removes the cells for which `f` is true and returns them.
    pub fn remove_where(&self, f: impl Fn(&Cell) -> bool) -> Vec<Arc<Cell>> {
        let mut cells = self.cells.write().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<String> = cells
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(id, _)| id.clone())
            .collect();
        let removed: Vec<_> = ids.iter().filter_map(|id| cells.remove(id)).collect();
        for cell in &removed {
            cell.retire();
        }
        removed
    }
}
