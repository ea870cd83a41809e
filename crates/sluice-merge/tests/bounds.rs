//! The memory bounds of one target's merge, through the public API: held deltas are bounded by
//! bytes as well as by count (`max_buffered_bytes`), and the state by its entity count
//! (`max_entities`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_merge::{
    BaseError, Input, MalformedError, MergeSpec, Merger, Outcome, ResnapshotReason, Strategy,
    VersionSpec,
};

/// A versioned `replace` target: base `{"v": V, "items": [...]}`, deltas `{"id", "v", "pad"}`.
fn spec(contiguous: bool) -> MergeSpec {
    MergeSpec {
        base_items: "/items".into(),
        base_key: "/id".into(),
        base_version: Some("/v".into()),
        key: "/id".into(),
        value: None,
        version: VersionSpec::Single("/v".into()),
        contiguous,
        strategy: Strategy::Replace,
        delete_events: vec!["delete".into()],
        ignore_events: Vec::new(),
        reset_events: Vec::new(),
        max_buffered: 1_000,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        dedupe_window: 100,
        limits: Default::default(),
    }
}

/// A delta of about `pad` bytes.
fn delta(id: &str, v: u64, pad: usize) -> String {
    json!({"id": id, "v": v, "pad": "x".repeat(pad)}).to_string()
}

fn base(v: u64, ids: &[&str]) -> String {
    let items: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    json!({"v": v, "items": items}).to_string()
}

fn offer(merger: &mut Merger, data: &str) -> Outcome {
    merger.offer(&Input::new("message", data.as_bytes()))
}

#[test]
fn deltas_past_the_byte_bound_are_a_gap_for_a_target_without_contiguous_versions() {
    // Count allows 1,000; bytes allow about three 10 KB deltas.
    let spec = MergeSpec {
        max_buffered_bytes: 35_000,
        ..spec(false)
    };
    let mut merger = Merger::new(Arc::new(spec));
    let first = merger.fetch_request().unwrap();
    for v in 1..=3 {
        assert_eq!(
            offer(&mut merger, &delta("a", v, 10_000)),
            Outcome::Buffered
        );
    }
    assert!(merger.buffered_bytes() <= 35_000);
    // The fourth would push the first out, and nothing proves the base in flight holds it.
    assert_eq!(
        offer(&mut merger, &delta("a", 4, 10_000)),
        Outcome::Resnapshot(ResnapshotReason::BufferFull)
    );
    assert_eq!((merger.buffered(), merger.buffer_discarded()), (1, 3));
    let fresh = merger.fetch_request().unwrap();
    assert_eq!(fresh.epoch, first.epoch + 1);
    assert_eq!(fresh.reason, ResnapshotReason::BufferFull);
}

#[test]
fn contiguous_deltas_past_the_byte_bound_drop_the_oldest_and_the_replay_finds_the_gap() {
    let spec = MergeSpec {
        max_buffered_bytes: 35_000,
        ..spec(true)
    };
    let mut merger = Merger::new(Arc::new(spec));
    let first = merger.fetch_request().unwrap();
    for v in 1..=5 {
        assert_eq!(
            offer(&mut merger, &delta("a", v, 10_000)),
            Outcome::Buffered
        );
        assert!(
            merger.buffered_bytes() <= 35_000,
            "held {}",
            merger.buffered_bytes()
        );
    }
    assert_eq!((merger.buffered(), merger.buffer_dropped()), (3, 2));
    // A base at v0 cannot bridge to v3: the dropped v1 and v2 are a gap, found, not lost.
    let done = merger
        .load_base(first.epoch, base(0, &[]).as_bytes())
        .unwrap();
    assert_eq!(done.resnapshot, Some(ResnapshotReason::Gap));
    // A base at v2 holds them: the three held deltas apply.
    let fresh = merger.fetch_request().unwrap();
    let done = merger
        .load_base(fresh.epoch, base(2, &[]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.applied, done.resnapshot), (3, None));
    assert_eq!(merger.version(), Some(5));
    assert_eq!(merger.buffered_bytes(), 0);
}

#[test]
fn one_delta_larger_than_the_byte_bound_is_still_held() {
    let spec = MergeSpec {
        max_buffered_bytes: 1_000,
        ..spec(true)
    };
    let mut merger = Merger::new(Arc::new(spec));
    let request = merger.fetch_request().unwrap();
    assert_eq!(offer(&mut merger, &delta("a", 1, 5_000)), Outcome::Buffered);
    assert_eq!(merger.buffered(), 1);
    let done = merger
        .load_base(request.epoch, base(0, &[]).as_bytes())
        .unwrap();
    assert_eq!(done.replayed.applied, 1);
}

#[test]
fn a_delta_that_would_add_an_entity_past_max_entities_is_refused_and_updates_still_apply() {
    for strategy in [Strategy::Replace, Strategy::MergePatch] {
        let spec = MergeSpec {
            max_entities: 2,
            strategy,
            contiguous: false,
            ..spec(false)
        };
        let mut merger = Merger::new(Arc::new(spec));
        let request = merger.fetch_request().unwrap();
        merger
            .load_base(request.epoch, base(0, &["a", "b"]).as_bytes())
            .unwrap();
        match offer(&mut merger, &delta("c", 1, 1)) {
            Outcome::Malformed(error) => {
                assert_eq!(error, MalformedError::TooManyEntities { max: 2 });
                assert_eq!(error.kind(), "too_many_entities");
                assert!(
                    error.to_string().contains("aggregate.max_entities"),
                    "{error}"
                );
            }
            other => panic!("{strategy:?}: expected a refusal, got {other:?}"),
        }
        assert_eq!(merger.len(), 2);
        assert!(merger.get("c").is_none());
        // The refused delta did not move the version: a later one for a known entity applies.
        assert!(matches!(
            offer(&mut merger, &delta("a", 2, 1)),
            Outcome::Applied(_)
        ));
        // A delete makes room.
        let delete = json!({"id": "b", "v": 3}).to_string();
        assert!(matches!(
            merger.offer(&Input::new("delete", delete.as_bytes())),
            Outcome::Applied(_)
        ));
        assert!(matches!(
            offer(&mut merger, &delta("c", 4, 1)),
            Outcome::Applied(_)
        ));
        assert_eq!(merger.len(), 2);
    }
}

#[test]
fn a_base_state_with_more_items_than_max_entities_is_refused_and_changes_nothing() {
    let spec = MergeSpec {
        max_entities: 2,
        ..spec(true)
    };
    let mut merger = Merger::new(Arc::new(spec));
    let request = merger.fetch_request().unwrap();
    let refused = merger.load_base(request.epoch, base(7, &["a", "b", "c"]).as_bytes());
    match refused {
        Err(error @ BaseError::TooManyEntities { max: 2 }) => {
            assert_eq!(error.kind(), "too_many_entities");
            assert!(error.is_retryable());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!merger.is_synced());
    assert!(merger.is_empty());
    // The same epoch loads a base within the bound.
    merger
        .load_base(request.epoch, base(7, &["a", "b"]).as_bytes())
        .unwrap();
    assert!(merger.is_synced());
}
