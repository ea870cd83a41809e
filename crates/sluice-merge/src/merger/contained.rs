//! Which deltas a fresh base state already holds, for targets without versions (a
//! `json_patch` `add` to an array applied on top of a base that holds it would add twice).
//!
//! A base state reflects every event the upstream sent before it was asked, so it holds every
//! delta that was in Kafka when its fetch started: those offered to the merger by then (counted
//! in the order deltas were held), and those still in Kafka behind the aggregator's position
//! (consumer lag), known by their offset being below the partition's high watermark read at the
//! start. Such deltas are not applied; their ids are remembered as if they had been (a
//! redelivery is a duplicate).
//!
//! What it must not do: treat as held a delta that may have reached Kafka after the fetch
//! started (an unknown offset or watermark counts as "not in the base", which may apply a
//! delta twice but never drops one the base lacks), or act for a versioned target (versions
//! decide there).

use std::sync::Arc;

use super::Merger;
use crate::buffer::Held;
use crate::outcome::Input;

impl Merger {
    /// The base fetch of `epoch` is starting now (its request is about to be sent; call it again
    /// for each retry): every delta offered until now came through Kafka before the upstream
    /// was asked, so an upstream whose base state reflects the events it has sent holds them.
    /// An unversioned target then does not apply them again when this base lands; the deltas
    /// offered after this may or may not be in the base, and apply. Without this call every
    /// held delta applies. A superseded epoch is ignored.
    pub fn fetch_started(&mut self, epoch: u64) {
        self.fetch_started_at(epoch, None);
    }

    /// [`Merger::fetch_started`], knowing also the high watermark of the target's partition
    /// read just before the request: records below it were in Kafka already, so the base holds
    /// them too, whether the merger has been offered them yet or not (records consumed after
    /// the base loaded included, until the first at or past the watermark). Offsets are known
    /// from [`Input::offset`].
    pub fn fetch_started_at(&mut self, epoch: u64, high_watermark: Option<i64>) {
        if epoch == self.epoch && !self.synced {
            self.contained_below = Some(self.buffer.next_seq());
            self.in_kafka_below = high_watermark;
        }
    }

    /// Whether the held `delta` is in the base being loaded: held before the fetch started
    /// (`contained_below`, in the order deltas were held), or its record was in Kafka then.
    pub(super) fn in_base(&mut self, contained_below: Option<u64>, delta: &Held) -> bool {
        let offered_before = contained_below.is_some_and(|below| delta.seq < below);
        let in_kafka = self.in_kafka(delta.offset);
        if offered_before || in_kafka {
            self.contained(delta.id.as_deref());
        }
        offered_before || in_kafka
    }

    /// Whether `input`, offered after the base loaded, is a record that was in Kafka when the
    /// base's fetch started (consumer lag): the base holds it. Unversioned targets only.
    pub(super) fn consumed_late(&mut self, input: &Input<'_>) -> bool {
        if self.in_kafka_below.is_none() || self.paths.version.is_versioned() {
            return false;
        }
        if self.in_kafka(input.offset) {
            self.contained(input.id);
            return true;
        }
        if input.offset.is_some() {
            // Past the watermark: every later record is too (one partition, in order).
            self.in_kafka_below = None;
        }
        false
    }

    fn in_kafka(&self, offset: Option<i64>) -> bool {
        matches!((offset, self.in_kafka_below), (Some(offset), Some(below)) if offset < below)
    }

    /// A delta of an unversioned target that the base state holds: not applied, its id
    /// remembered as if it had been (a redelivery of it is a duplicate).
    fn contained(&mut self, id: Option<&str>) {
        if let Some(id) = id {
            self.last_id = Some(Arc::from(id));
            self.ids.remember(id);
        }
    }
}
