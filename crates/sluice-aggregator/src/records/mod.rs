//! Record handling: one consumed record's headers are read (`sluice.target`, `sse.id`,
//! `sse.event`, `sluice.connection`, `sluice.resume`), its target found (or adopted when the
//! partitioner did not predict it), and it is offered to the target's merger under its lock;
//! the outcome is counted by its `DeltaOutcome`, an applied change goes to the ring and the
//! `/stream` clients, a malformed delta to the dead-letter topic, a re-snapshot to the fetch
//! queue.
//!
//! A record below a target's `next_offset` is never offered again; offsets are compared only
//! within the target's own partition (a record of it in another one is skipped and logged,
//! unless the target has taken no record yet and its partition was only predicted). This module must not fetch,
//! snapshot or commit.

mod dead_letter;
mod record;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_merge::{Input, MalformedError, Outcome};

pub use record::Record;

use crate::metrics::DeltaOutcome;
use crate::shared::Shared;
use crate::store::{Cell, RingEntry, StreamItem};

/// The headers the merger reads, borrowed from the record.
struct Headers<'r> {
    target: Option<&'r str>,
    id: Option<&'r str>,
    event: &'r str,
    connection: Option<u64>,
    resume: Option<&'r str>,
}

impl<'r> Headers<'r> {
    /// Reads them; the target falls back to the record key. Only the headers named here are
    /// decoded.
    fn read<R: Record>(message: &'r R) -> Headers<'r> {
        let mut h = Headers {
            target: None,
            id: None,
            event: "message",
            connection: None,
            resume: None,
        };
        message.for_each_header(|name, value| match name {
            b"sluice.target" => h.target = text(value),
            b"sse.id" => h.id = text(value).filter(|v| !v.is_empty()),
            b"sse.event" => h.event = text(value).unwrap_or("message"),
            b"sluice.connection" => h.connection = text(value).and_then(|v| v.parse().ok()),
            b"sluice.resume" => h.resume = Some(text(value).unwrap_or("")),
            _ => {}
        });
        h.target = h
            .target
            .or_else(|| message.key().and_then(|k| std::str::from_utf8(k).ok()));
        h
    }
}

/// A header value as text (`None` when absent or not UTF-8).
fn text(value: Option<&[u8]>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v).ok())
}

/// Offers records to their targets (owned by the consumer thread).
pub struct Handler {
    shared: Arc<Shared>,
    /// Malformed deltas logged per target (the log is rate-limited past 100).
    malformed_logged: RefCell<HashMap<String, u64>>,
    /// Records in another partition than their target's, logged per target (rate-limited).
    other_partition_logged: RefCell<HashMap<String, u64>>,
    /// The cell of the last record handled.
    last_cell: RefCell<Option<Arc<Cell>>>,
}

impl Handler {
    /// A handler for the targets of `shared`.
    pub fn new(shared: Arc<Shared>) -> Handler {
        Handler {
            shared,
            malformed_logged: Default::default(),
            other_partition_logged: Default::default(),
            last_cell: Default::default(),
        }
    }

    fn skipped(&self, reason: &str) {
        self.shared
            .metrics
            .skipped
            .with_label_values(&[reason])
            .inc();
    }

    /// Handles one record consumed at about `now`.
    pub fn handle<R: Record>(&self, message: &R, now: SystemTime) {
        let headers = Headers::read(message);
        let Some(target) = headers.target else {
            return self.skipped("unknown_target");
        };
        let Some(cell) = self.cell_for(message, target) else {
            return self.skipped("unknown_target");
        };
        let offset = message.offset();
        let mut inner = cell.lock();
        if message.partition() != inner.partition {
            if inner.placed {
                // Offsets of two partitions say nothing about each other's order.
                drop(inner);
                self.other_partition(message, target);
                return self.skipped("other_partition");
            }
            // The partitioner's prediction was wrong: the target lives where its records are.
            tracing::info!(target_id = %target, predicted = inner.partition, partition = message.partition(), "the target's records are in another partition than predicted: following them");
            inner.partition = message.partition();
            inner.next_offset = offset;
        }
        inner.placed = true;
        if offset < inner.next_offset {
            return self.skipped("already_applied");
        }
        inner.next_offset = offset + 1;
        let input = Input {
            id: headers.id,
            event: headers.event,
            data: message.payload(),
            connection: headers.connection,
            resume: headers.resume,
            offset: Some(offset),
        };
        // Checked under the cell's lock: a `/stream` client counts itself before it locks the
        // cell to read its starting state, so it either sees this change in that state or is
        // counted here and is sent it.
        let listening = cell.has_subscribers();
        let outcome = inner.merger.offer_with(&input, listening);
        cell.counters.inc(DeltaOutcome::of(&outcome));
        match outcome {
            Outcome::Applied(change) => {
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
            Outcome::Buffered | Outcome::Stale | Outcome::Duplicate | Outcome::Ignored => {}
            Outcome::Malformed(error) => {
                inner.dirty = true;
                drop(inner);
                self.malformed(message, target, headers.event, &error);
            }
            Outcome::Resnapshot(reason) => {
                drop(inner);
                tracing::info!(target_id = %target, offset, reason = reason.as_str(), "fresh base state needed");
                self.shared.want_fetch(cell);
            }
        }
    }

    /// The owned cell of `target`, or a fresh one when it is configured for this topic but was
    /// not predicted at the assignment; `None` for a target not configured here.
    fn cell_for<R: Record>(&self, message: &R, target: &str) -> Option<Arc<Cell>> {
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
                let def = self.shared.defs.get(target).cloned()?;
                if def.target.topic != message.topic() {
                    return None;
                }
                // A target in an assigned partition that the partitioner did not predict (the
                // worker used another partitioner): adopt it.
                tracing::info!(target_id = %target, partition = message.partition(), "first record of a target without a snapshot: fetching its base state");
                self.shared
                    .insert_fresh_cell(&def, message.partition(), message.offset(), false)
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
        Some(cell)
    }

    fn other_partition<R: Record>(&self, message: &R, target: &str) {
        let logged = self.count_logged(&self.other_partition_logged, target);
        if logged <= 10 || logged.is_power_of_two() {
            tracing::error!(target_id = %target, topic = message.topic(), partition = message.partition(), offset = message.offset(), skipped_so_far = logged, "a record of the target in another partition than its own: skipped (a target's records must all be in one partition: key: target)");
        }
    }

    /// Counts one more log-worthy event of `target` in `counts`; returns the count.
    fn count_logged(&self, counts: &RefCell<HashMap<String, u64>>, target: &str) -> u64 {
        let mut counts = counts.borrow_mut();
        let count = counts.entry(target.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn malformed<R: Record>(&self, message: &R, target: &str, event: &str, error: &MalformedError) {
        self.shared.metrics.malformed.inc(target, error.kind());
        let logged = self.count_logged(&self.malformed_logged, target);
        if logged <= 100 || logged.is_power_of_two() {
            tracing::warn!(target_id = %target, topic = message.topic(), partition = message.partition(), offset = message.offset(), event, kind = error.kind(), %error, malformed_so_far = logged, "malformed delta skipped");
        }
        dead_letter::dead_letter(&self.shared, message, target, &error.to_string());
    }
}
