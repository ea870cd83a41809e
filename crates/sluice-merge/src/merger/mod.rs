//! The merger: one target's state machine. It waits for a base state (holding deltas meanwhile),
//! loads it, replays what it held, then applies deltas one by one until a gap, a lost
//! connection generation, a reset event or an unknown entity asks for a fresh base state.

mod contained;
mod read;

use std::sync::Arc;

use imbl::OrdMap;

use serde_json::{Map, Value};

use crate::base::Base;
use crate::buffer::{Buffer, Held};
use crate::dedupe::IdWindow;
use crate::entities::Entities;
use crate::entity::Entity;
use crate::error::{BaseError, MalformedError};
use crate::limits;
use crate::outcome::{BaseApplied, Change, Counts, FetchRequest, Input, Outcome, ResnapshotReason};
use crate::paths::Paths;
use crate::snapshot::TargetSnapshot;
use crate::spec::{MergeSpec, Strategy};
use crate::version::Order;
use read::{Content, Delta};

/// One target's merged state and the rules that keep it exact.
///
/// Phases: awaiting a base state (new, or a re-snapshot is pending: deltas are held in a bounded
/// buffer) and synced (deltas apply as they come). A base state is requested through
/// [`Merger::fetch_request`] and loaded with [`Merger::load_base`]; the epoch ties a fetch to the
/// request it answers, so a fetch that started before a later loss is refused.
#[derive(Debug, Clone)]
pub struct Merger {
    spec: Arc<MergeSpec>,
    paths: Paths,
    /// By key, in key order, persistent: a version of it ([`Merger::entities_version`]) is a
    /// clone of its root, and an edit afterwards copies only the nodes on its path that the
    /// version still shares. The key is shared with the changes that name it (no copy per
    /// delta).
    entities: OrdMap<Arc<str>, Entity>,
    /// The state's version.
    version: Option<u64>,
    /// The version of the last base state loaded (deltas at or below it are stale).
    base_version: Option<u64>,
    change_seq: u64,
    last_connection: Option<u64>,
    /// Recent `sse.id`s (unversioned targets only).
    ids: IdWindow,
    /// The `sse.id` of the last delta offered to the synced rules (unversioned targets only):
    /// the worker carries an id forward to events without an `id:` line, so a run of one id is
    /// one event and the ones after it, not replays.
    last_id: Option<Arc<str>>,
    buffer: Buffer,
    /// Deltas dropped from the buffer because a reset or a new generation made them useless.
    discarded: u64,
    /// A complete state exists (a base was loaded or a snapshot restored).
    has_state: bool,
    /// A base state is loaded and no re-snapshot is pending.
    synced: bool,
    epoch: u64,
    /// A fetch requested and not yet handed out by [`Merger::fetch_request`].
    request: Option<ResnapshotReason>,
    /// Held deltas numbered below this were offered before the pending base fetch started
    /// ([`Merger::fetch_started`]), so the base holds them: an unversioned target skips them
    /// when the base lands instead of applying them again.
    contained_below: Option<u64>,
    /// Deltas whose records sit below this offset of their partition were in Kafka when the
    /// pending (or last loaded) base fetch started ([`Merger::fetch_started_at`]): the base
    /// holds them, held or consumed later (consumer lag). Cleared at the first record at or past
    /// it, and by a new request.
    in_kafka_below: Option<i64>,
}

/// What one delta did to the state.
enum Step {
    Applied {
        key: Arc<str>,
        value: Option<Entity>,
    },
    Stale,
    Duplicate,
    Malformed(MalformedError),
    /// A fresh base state is needed before this delta can apply.
    Break(ResnapshotReason),
}

impl Merger {
    /// A merger with no state: it awaits a base state, and a fetch (epoch 1, reason
    /// [`ResnapshotReason::Initial`]) is pending.
    pub fn new(spec: Arc<MergeSpec>) -> Merger {
        let paths = Paths::new(&spec);
        Merger {
            paths,
            entities: OrdMap::new(),
            version: None,
            base_version: None,
            change_seq: 0,
            last_connection: None,
            ids: IdWindow::new(spec.dedupe_window),
            last_id: None,
            buffer: Buffer::new(spec.max_buffered, spec.max_buffered_bytes),
            discarded: 0,
            has_state: false,
            synced: false,
            epoch: 1,
            request: Some(ResnapshotReason::Initial),
            contained_below: None,
            in_kafka_below: None,
            spec,
        }
    }

    /// A merger holding `snap`: synced, no fetch pending, epoch 0. The dedupe window is restored
    /// for unversioned targets only (versioned targets keep none).
    pub fn restore(spec: Arc<MergeSpec>, snap: TargetSnapshot) -> Merger {
        let paths = Paths::new(&spec);
        let (ids, last_id) = if paths.version.is_versioned() {
            (IdWindow::new(spec.dedupe_window), None)
        } else {
            (
                IdWindow::with_ids(spec.dedupe_window, &snap.recent_ids),
                snap.recent_ids.last().map(|id| Arc::from(id.as_str())),
            )
        };
        Merger {
            paths,
            entities: snap
                .entities
                .into_iter()
                .map(|(key, value)| (Arc::from(key), value))
                .collect(),
            version: snap.version,
            base_version: None,
            change_seq: snap.change_seq,
            last_connection: snap.last_connection,
            ids,
            last_id,
            buffer: Buffer::new(spec.max_buffered, spec.max_buffered_bytes),
            discarded: 0,
            has_state: true,
            synced: true,
            epoch: 0,
            request: None,
            contained_below: None,
            in_kafka_below: None,
            spec,
        }
    }

    /// The last complete state (also while a re-snapshot is pending); `None` before the first
    /// base state. Held deltas and a pending fetch are not part of it: a restored merger is
    /// synced.
    pub fn export(&self) -> Option<TargetSnapshot> {
        if !self.has_state {
            return None;
        }
        Some(TargetSnapshot {
            version: self.version,
            change_seq: self.change_seq,
            last_connection: self.last_connection,
            recent_ids: self.ids.to_vec(),
            entities: self
                .entities
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone()))
                .collect(),
        })
    }

    /// Takes one record. Order of the rules: a new connection generation that did not resume,
    /// ignored event types, reset events, then (awaiting a base) hold it, or (synced) apply it.
    pub fn offer(&mut self, input: &Input<'_>) -> Outcome {
        self.offer_with(input, true)
    }

    /// [`Merger::offer`], where `values` says whether an applied [`Change`] carries the new
    /// entity. Without (`false`), `Change::value` is `None` for every change, upserts included:
    /// for a caller that needs only the key and sequence (nobody to send the value to), which
    /// saves a reference count update on the entity per delta.
    pub fn offer_with(&mut self, input: &Input<'_>, values: bool) -> Outcome {
        let ignored = is_one_of(&self.spec.ignore_events, input.event);
        let reset = !ignored && is_one_of(&self.spec.reset_events, input.event);
        let delete = is_one_of(&self.spec.delete_events, input.event);
        if let Some(connection) = input.connection {
            let new_generation = self.last_connection != Some(connection);
            self.last_connection = Some(connection);
            if new_generation && input.resume == Some("") {
                // Everything held came before the loss, so before the fetch this requests.
                self.discarded += self.buffer.clear();
                let reason = ResnapshotReason::Generation;
                self.request_base(reason);
                if !ignored && !reset {
                    self.buffer.push(held(input, delete, Some(reason)));
                }
                return Outcome::Resnapshot(reason);
            }
        }
        if ignored {
            return Outcome::Ignored;
        }
        if reset {
            self.discarded += self.buffer.clear();
            self.request_base(ResnapshotReason::ResetEvent);
            return Outcome::Resnapshot(ResnapshotReason::ResetEvent);
        }
        if !self.synced {
            // A delta that can never apply is reported now, while its record is at hand (the
            // aggregator dead-letters it); found only when the buffer is replayed, it would be
            // counted and dropped with nothing to show for it.
            let read = match self.spec.strategy {
                Strategy::Replace => self.read_text(input.data, delete).map(drop),
                Strategy::MergePatch | Strategy::JsonPatch => {
                    self.read_tree(input.data, delete).map(drop)
                }
            };
            if let Err(error) = read {
                return Outcome::Malformed(error);
            }
            let contiguous = self.spec.contiguous && self.paths.version.is_versioned();
            if self.buffer.is_full_for(input.id, input.data) && !contiguous {
                // Dropping the oldest would lose it silently: without contiguous versions
                // nothing tells whether the base being fetched holds it. A gap, then: what is
                // held goes, and a base fetched after this delta replaces the pending one.
                self.discarded += self.buffer.clear();
                let reason = ResnapshotReason::BufferFull;
                self.request_base(reason);
                self.buffer.push(held(input, delete, Some(reason)));
                return Outcome::Resnapshot(reason);
            }
            self.buffer.push(held(input, delete, None));
            return Outcome::Buffered;
        }
        if self.consumed_late(input) {
            return Outcome::Stale;
        }
        match self.step(input.id, delete, input.data, None, values) {
            Step::Applied { key, value } => {
                self.change_seq += 1;
                Outcome::Applied(Change {
                    seq: self.change_seq,
                    key,
                    value,
                })
            }
            Step::Stale => Outcome::Stale,
            Step::Duplicate => Outcome::Duplicate,
            Step::Malformed(error) => Outcome::Malformed(error),
            Step::Break(reason) => {
                self.request_base(reason);
                self.buffer.push(held(input, delete, Some(reason)));
                Outcome::Resnapshot(reason)
            }
        }
    }

    /// The base fetch to start, once per request (then `None` until another is requested).
    pub fn fetch_request(&mut self) -> Option<FetchRequest> {
        self.request.take().map(|reason| FetchRequest {
            epoch: self.epoch,
            reason,
        })
    }

    /// The deltas after this state are lost (`reason` says how, e.g. their records are no
    /// longer in Kafka): the held ones are dropped (they came before the loss, so before the
    /// fetch this requests) and a fresh base state is requested; the last complete state stays
    /// readable, not synced.
    pub fn deltas_lost(&mut self, reason: ResnapshotReason) {
        self.discarded += self.buffer.clear();
        self.request_base(reason);
    }

    /// The current fetch epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Loads the base state fetched for `epoch`: every entity is replaced by the base items,
    /// the version becomes the base's, then the held deltas are replayed in order (those at or
    /// below the base version are stale; for unversioned targets, those offered before the
    /// fetch started, see [`Merger::fetch_started`]). Counts as one change. A gap or an unknown entity
    /// during the replay leaves the merger awaiting another base (requested; the deltas from
    /// that one on stay held). On error nothing changes.
    pub fn load_base(&mut self, epoch: u64, body: &[u8]) -> Result<BaseApplied, BaseError> {
        self.load_base_pages(epoch, &[body])
    }

    /// [`Merger::load_base`] for a base state fetched in pages (in the order they were
    /// fetched): their items form one base state with the first page's version, the deltas
    /// after which are replayed over it (an entity on two pages keeps the later copy; a key
    /// twice on one page is an error, as in one document). On error nothing changes.
    pub fn load_base_pages<P: AsRef<[u8]>>(
        &mut self,
        epoch: u64,
        pages: &[P],
    ) -> Result<BaseApplied, BaseError> {
        if epoch != self.epoch || self.synced {
            return Err(BaseError::Superseded {
                epoch,
                current: self.epoch,
            });
        }
        let base = Base::parse_pages(&self.paths, pages, self.spec.max_entities)?;
        self.entities = base.entities;
        self.version = base.version;
        self.base_version = base.version;
        self.has_state = true;
        self.synced = true;
        self.request = None;
        self.change_seq += 1;

        let mut replayed = Counts::default();
        let mut resnapshot = None;
        let contained_below = self.contained_below.take();
        let versioned = self.paths.version.is_versioned();
        while let Some(mut delta) = self.buffer.pop() {
            if !versioned && self.in_base(contained_below, &delta) {
                replayed.stale += 1;
                continue;
            }
            match self.step(
                delta.id.as_deref(),
                delta.delete,
                &delta.data,
                delta.caused,
                true,
            ) {
                Step::Applied { .. } => replayed.applied += 1,
                Step::Stale => replayed.stale += 1,
                Step::Duplicate => replayed.duplicate += 1,
                Step::Malformed(_) => replayed.malformed += 1,
                Step::Break(reason) => {
                    delta.caused = Some(reason);
                    self.buffer.push_front(delta);
                    self.request_base(reason);
                    resnapshot = Some(reason);
                    break;
                }
            }
        }
        Ok(BaseApplied {
            entities: self.entities.len(),
            version: self.version,
            replayed,
            resnapshot,
        })
    }

    /// Whether a base state is loaded and no re-snapshot is pending.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Whether a complete state exists (synced now, or before a pending re-snapshot).
    pub fn has_state(&self) -> bool {
        self.has_state
    }

    /// The state's version.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The change sequence: +1 per applied delta and per base state loaded.
    pub fn change_seq(&self) -> u64 {
        self.change_seq
    }

    /// The number of entities.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether there are no entities.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The entity `key`.
    pub fn get(&self, key: &str) -> Option<&Entity> {
        self.entities.get(key)
    }

    /// The entities as they are now, as an immutable version: O(1) (a pointer copy), and
    /// unchanged by whatever the merger does afterwards. A reader takes it under the lock the
    /// merger is behind and reads, pages and serialises it after releasing the lock.
    pub fn entities_version(&self) -> Entities {
        Entities::new(self.entities.clone())
    }

    /// Every entity, sorted by key.
    pub fn entities(&self) -> impl Iterator<Item = (&str, &Entity)> {
        self.entities.iter().map(|(key, value)| (&**key, value))
    }

    /// Deltas held for the next base state.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes the held deltas take, as counted against [`MergeSpec::max_buffered_bytes`].
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.bytes()
    }

    /// Deltas dropped from a full buffer (oldest first), total: only targets with contiguous
    /// versions drop them (the replay finds the gap they leave); the others discard the buffer
    /// for a fresh base state ([`ResnapshotReason::BufferFull`]).
    pub fn buffer_dropped(&self) -> u64 {
        self.buffer.dropped()
    }

    /// Held deltas dropped because a reset event, a new connection generation or a full
    /// buffer made them older than any base state still to come, total.
    pub fn buffer_discarded(&self) -> u64 {
        self.discarded
    }

    /// The last worker connection generation seen.
    pub fn last_connection(&self) -> Option<u64> {
        self.last_connection
    }

    /// The merge rules.
    pub fn spec(&self) -> &Arc<MergeSpec> {
        &self.spec
    }

    /// Asks for a fresh base state: a new epoch (so a fetch in flight is refused) and a pending
    /// request; the state stays readable.
    fn request_base(&mut self, reason: ResnapshotReason) {
        self.epoch += 1;
        self.request = Some(reason);
        self.synced = false;
        self.contained_below = None;
        self.in_kafka_below = None;
    }

    /// Applies one delta under the synced rules. `caused`: the re-snapshot this delta caused
    /// before, if any.
    fn step(
        &mut self,
        id: Option<&str>,
        delete: bool,
        data: &[u8],
        caused: Option<ResnapshotReason>,
        values: bool,
    ) -> Step {
        let versioned = self.paths.version.is_versioned();
        if !versioned && let Some(id) = id {
            // Only the first delta of a run of one id can be a replay; the others carry it
            // forward (their events had no `id:` line).
            let carried = self.last_id.as_deref() == Some(id);
            if !carried {
                self.last_id = Some(Arc::from(id));
                if self.ids.contains(id) {
                    return Step::Duplicate;
                }
            }
        }
        let read = match self.spec.strategy {
            // The entity is stored as text: read only what the rules need, build no tree.
            Strategy::Replace => self.read_text(data, delete),
            // The patch is needed as a tree anyway: parse once and read from it.
            Strategy::MergePatch | Strategy::JsonPatch => self.read_tree(data, delete),
        };
        let Delta { span, key, content } = match read {
            Ok(delta) => delta,
            Err(e) => return Step::Malformed(e),
        };
        if let Some(span) = span {
            match span.order(self.version, self.spec.contiguous) {
                Order::Apply => {}
                Order::Old if self.base_version.is_some_and(|base| span.last <= base) => {
                    return Step::Stale;
                }
                Order::Old => return Step::Duplicate,
                Order::Gap => return Step::Break(ResnapshotReason::Gap),
            }
        }
        let (key, value) = match content {
            Content::Delete => match self.entities.remove_with_key(&*key) {
                Some((key, _)) => (key, None),
                None => (Arc::from(key), None),
            },
            Content::Replace(text) => {
                let value = Entity::Text(text);
                let kept = values.then(|| value.clone());
                let key = match self.entities.get_key_value_mut(&*key) {
                    Some((key, slot)) => {
                        *slot = value;
                        Arc::clone(key)
                    }
                    None => match self.insert(&key, value) {
                        Ok(key) => key,
                        Err(e) => return Step::Malformed(e),
                    },
                };
                (key, kept)
            }
            Content::MergePatch(patch) => match self.entities.get_key_value_mut(&*key) {
                Some((key, slot)) => {
                    json_patch::merge(slot.tree_mut(), &patch);
                    (Arc::clone(key), values.then(|| slot.clone()))
                }
                None => {
                    let mut value = Value::Object(Map::new());
                    json_patch::merge(&mut value, &patch);
                    let value = Entity::from(value);
                    let kept = values.then(|| value.clone());
                    match self.insert(&key, value) {
                        Ok(key) => (key, kept),
                        Err(e) => return Step::Malformed(e),
                    }
                }
            },
            Content::JsonPatch(patch) => {
                let Some((key, slot)) = self.entities.get_key_value_mut(&*key) else {
                    if caused == Some(ResnapshotReason::UnknownEntity) {
                        // A fresh base state did not bring the entity either: the patch is for
                        // an entity that no longer exists.
                        return Step::Malformed(MalformedError::PatchFailed(
                            "entity still unknown after a fresh base state".to_owned(),
                        ));
                    }
                    return Step::Break(ResnapshotReason::UnknownEntity);
                };
                // Patched on a copy: the entity stays as it was when an operation fails.
                let mut next = slot.to_value();
                // Each operation is checked against the limits before it runs, so an entity
                // that would pass them is never built.
                if let Err(e) = limits::patch(&mut next, &patch, &self.spec.limits) {
                    return Step::Malformed(e);
                }
                *slot = Entity::from(next);
                (Arc::clone(key), values.then(|| slot.clone()))
            }
        };
        if let Some(span) = span {
            self.version = Some(span.last);
        }
        if !versioned && let Some(id) = id {
            self.ids.remember(id);
        }
        Step::Applied { key, value }
    }

    /// Adds the entity `key` (absent before); the key as the state now holds it. Refused when
    /// the state holds [`MergeSpec::max_entities`] already.
    fn insert(&mut self, key: &str, value: Entity) -> Result<Arc<str>, MalformedError> {
        if self.entities.len() >= self.spec.max_entities {
            return Err(MalformedError::TooManyEntities {
                max: self.spec.max_entities,
            });
        }
        let key: Arc<str> = Arc::from(key);
        self.entities.insert(Arc::clone(&key), value);
        Ok(key)
    }
}

/// `input` as held in the buffer.
fn held(input: &Input<'_>, delete: bool, caused: Option<ResnapshotReason>) -> Held {
    Held {
        id: input.id.map(Box::from),
        delete,
        data: input.data.into(),
        caused,
        seq: 0,
        offset: input.offset,
    }
}

fn is_one_of(events: &[String], event: &str) -> bool {
    events.iter().any(|e| e == event)
}
