//! A fresh base state and the deltas held while it was fetched, for targets without versions:
//! those offered before the fetch started are in the base and are not applied again (a
//! `json_patch` `add` to an array would add twice); those offered after it may not be, and
//! apply.

#![allow(clippy::unwrap_used)]

mod specs;

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_merge::{Input, MergeSpec, Merger, Outcome, ResnapshotReason};

fn spec() -> MergeSpec {
    specs::unversioned_json_patch()
}

/// The delta with `sse.id` `id` appending `n` to `a`'s list.
fn append(merger: &mut Merger, id: &str, n: i64) -> Outcome {
    let data = json!({"id": "a", "ops": [{"op": "add", "path": "/l/-", "value": n}]}).to_string();
    merger.offer(&Input {
        id: Some(id),
        ..Input::new("message", data.as_bytes())
    })
}

fn base(list: &[i64]) -> String {
    json!({"items": [{"id": "a", "l": list}]}).to_string()
}

fn list(merger: &Merger) -> Value {
    merger.get("a").unwrap().to_value()["l"].clone()
}

/// A synced merger whose `a` has the list `[]`.
fn synced() -> Merger {
    let mut merger = Merger::new(Arc::new(spec()));
    let request = merger.fetch_request().unwrap();
    merger
        .load_base(request.epoch, base(&[]).as_bytes())
        .unwrap();
    merger
}

#[test]
fn deltas_offered_before_the_fetch_started_are_in_the_base_and_not_applied_again() {
    let mut merger = synced();
    assert!(matches!(append(&mut merger, "1", 1), Outcome::Applied(_)));
    // The upstream says continuity is broken; deltas keep coming while the fetch waits.
    let reset = Input::new("reset", b"{}");
    assert_eq!(
        merger.offer(&reset),
        Outcome::Resnapshot(ResnapshotReason::ResetEvent)
    );
    let request = merger.fetch_request().unwrap();
    assert_eq!(append(&mut merger, "2", 2), Outcome::Buffered);
    assert_eq!(append(&mut merger, "3", 3), Outcome::Buffered);
    merger.fetch_started(request.epoch);
    assert_eq!(append(&mut merger, "4", 4), Outcome::Buffered);
    // The upstream's base state holds 2 and 3 (sent before it was asked), not 4.
    let done = merger
        .load_base(request.epoch, base(&[1, 2, 3]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.stale, done.replayed.applied), (2, 1));
    assert_eq!(list(&merger), json!([1, 2, 3, 4]));
    // A redelivery of a delta the base held is a duplicate, as if it had been applied.
    assert_eq!(append(&mut merger, "3", 3), Outcome::Duplicate);
    assert_eq!(list(&merger), json!([1, 2, 3, 4]));
}

#[test]
fn a_retried_fetch_holds_what_was_offered_before_the_retry_started() {
    let mut merger = Merger::new(Arc::new(spec()));
    let request = merger.fetch_request().unwrap();
    merger.fetch_started(request.epoch);
    assert_eq!(append(&mut merger, "1", 1), Outcome::Buffered);
    // That attempt failed; the retry of the same epoch starts after delta 1.
    merger.fetch_started(request.epoch);
    assert_eq!(append(&mut merger, "2", 2), Outcome::Buffered);
    let done = merger
        .load_base(request.epoch, base(&[1]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.stale, done.replayed.applied), (1, 1));
    assert_eq!(list(&merger), json!([1, 2]));
}

#[test]
fn without_a_start_or_for_a_superseded_epoch_every_held_delta_applies() {
    let mut merger = Merger::new(Arc::new(spec()));
    let first = merger.fetch_request().unwrap();
    assert_eq!(append(&mut merger, "1", 1), Outcome::Buffered);
    let reset = Input::new("reset", b"{}");
    merger.offer(&reset);
    let second = merger.fetch_request().unwrap();
    // The start of the superseded fetch says nothing about the current one.
    merger.fetch_started(first.epoch);
    assert_eq!(append(&mut merger, "2", 2), Outcome::Buffered);
    let done = merger
        .load_base(second.epoch, base(&[]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.stale, done.replayed.applied), (0, 1));
    assert_eq!(list(&merger), json!([2]));
    // And a start once synced changes nothing.
    merger.fetch_started(second.epoch);
    assert!(matches!(append(&mut merger, "3", 3), Outcome::Applied(_)));
    assert_eq!(list(&merger), json!([2, 3]));
}

/// [`append`] of the record at `offset` of the target's partition.
fn append_at(merger: &mut Merger, offset: i64, n: i64) -> Outcome {
    let data = json!({"id": "a", "ops": [{"op": "add", "path": "/l/-", "value": n}]}).to_string();
    let id = n.to_string();
    merger.offer(&Input {
        id: Some(&id),
        offset: Some(offset),
        ..Input::new("message", data.as_bytes())
    })
}

#[test]
fn records_in_kafka_when_the_fetch_started_but_not_yet_consumed_are_in_the_base() {
    let mut merger = synced();
    assert!(matches!(append_at(&mut merger, 0, 1), Outcome::Applied(_)));
    let reset = Input {
        offset: Some(1),
        ..Input::new("reset", b"{}")
    };
    assert_eq!(
        merger.offer(&reset),
        Outcome::Resnapshot(ResnapshotReason::ResetEvent)
    );
    let request = merger.fetch_request().unwrap();
    assert_eq!(append_at(&mut merger, 2, 2), Outcome::Buffered);
    // The aggregator lags: records 3 to 5 are in Kafka (the high watermark is 6) but not
    // consumed when the fetch starts; the upstream's base holds every one of them.
    merger.fetch_started_at(request.epoch, Some(6));
    assert_eq!(append_at(&mut merger, 3, 3), Outcome::Buffered);
    let done = merger
        .load_base(request.epoch, base(&[1, 2, 3, 4, 5]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.stale, done.replayed.applied), (2, 0));
    assert_eq!(list(&merger), json!([1, 2, 3, 4, 5]));
    // Consumed after the base loaded, still below the watermark: in the base, not applied.
    assert_eq!(append_at(&mut merger, 4, 4), Outcome::Stale);
    assert_eq!(append_at(&mut merger, 5, 5), Outcome::Stale);
    assert_eq!(list(&merger), json!([1, 2, 3, 4, 5]));
    // The first record past the watermark reached Kafka after the fetch started: it applies,
    // and so does everything after it.
    assert!(matches!(append_at(&mut merger, 6, 6), Outcome::Applied(_)));
    assert!(matches!(append_at(&mut merger, 7, 7), Outcome::Applied(_)));
    assert_eq!(list(&merger), json!([1, 2, 3, 4, 5, 6, 7]));
    // A redelivery of one the base held is a duplicate, as if it had been applied.
    assert_eq!(append_at(&mut merger, 8, 5), Outcome::Duplicate);
    assert_eq!(list(&merger), json!([1, 2, 3, 4, 5, 6, 7]));
}

#[test]
fn an_unknown_watermark_or_a_new_request_counts_nothing_as_in_the_base() {
    let mut merger = Merger::new(Arc::new(spec()));
    let first = merger.fetch_request().unwrap();
    merger.fetch_started_at(first.epoch, Some(100));
    // Continuity breaks before that base lands: the next fetch knows no watermark.
    let reset = Input {
        offset: Some(1),
        ..Input::new("reset", b"{}")
    };
    merger.offer(&reset);
    let second = merger.fetch_request().unwrap();
    merger.fetch_started_at(second.epoch, None);
    assert_eq!(append_at(&mut merger, 2, 2), Outcome::Buffered);
    merger
        .load_base(second.epoch, base(&[]).as_bytes())
        .unwrap();
    assert_eq!(list(&merger), json!([2]));
    assert!(matches!(append_at(&mut merger, 3, 3), Outcome::Applied(_)));
    // A record without an offset is never taken as in the base.
    let third = {
        merger.offer(&reset);
        merger.fetch_request().unwrap()
    };
    merger.fetch_started_at(third.epoch, Some(10));
    merger
        .load_base(third.epoch, base(&[2, 3]).as_bytes())
        .unwrap();
    assert!(matches!(append(&mut merger, "9", 9), Outcome::Applied(_)));
    assert_eq!(list(&merger), json!([2, 3, 9]));
}
