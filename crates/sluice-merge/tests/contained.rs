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
