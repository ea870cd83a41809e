//! The merge rules, one behaviour per test, through the public API only.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_merge::{
    BaseApplied, BaseError, Counts, FetchRequest, Input, MalformedError, MergeSpec, Merger,
    Outcome, ResnapshotReason, Strategy, TargetSnapshot, VersionSpec,
};

/// A versioned, contiguous `replace` target: base `{"v": V, "items": [{"id": .., ...}]}`,
/// deltas `{"id": .., "v": .., ...}`.
fn spec() -> MergeSpec {
    MergeSpec {
        base_items: "/items".into(),
        base_key: "/id".into(),
        base_version: Some("/v".into()),
        key: "/id".into(),
        value: None,
        version: VersionSpec::Single("/v".into()),
        contiguous: true,
        strategy: Strategy::Replace,
        delete_events: vec!["delete".into()],
        ignore_events: vec!["heartbeat".into()],
        reset_events: vec!["reset".into()],
        max_buffered: 100,
        dedupe_window: 100,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    }
}

/// The same target without versions (base and deltas).
fn unversioned() -> MergeSpec {
    MergeSpec {
        base_version: None,
        version: VersionSpec::None,
        ..spec()
    }
}

/// Order-book versions: `U` (first) and `u` (last) per delta, `lastUpdateId` in the base.
fn binance() -> MergeSpec {
    MergeSpec {
        base_version: Some("/lastUpdateId".into()),
        version: VersionSpec::Range {
            first: "/U".into(),
            last: "/u".into(),
        },
        ..spec()
    }
}

fn message(data: &str) -> Input<'_> {
    Input::new("message", data.as_bytes())
}

fn delta(id: &str, v: u64, x: i64) -> String {
    json!({"id": id, "v": v, "x": x}).to_string()
}

fn base(v: u64, items: &[(&str, i64)]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, x)| json!({"id": id, "x": x}))
        .collect();
    json!({"v": v, "items": items}).to_string()
}

/// A merger that loaded `body` as its first base state.
fn loaded(spec: MergeSpec, body: &str) -> Merger {
    let mut merger = Merger::new(Arc::new(spec));
    let request = merger.fetch_request().unwrap();
    merger.load_base(request.epoch, body.as_bytes()).unwrap();
    merger
}

/// The entities as `(key, x)`.
fn xs(merger: &Merger) -> Vec<(String, i64)> {
    merger
        .entities()
        .map(|(key, value)| {
            (
                key.to_owned(),
                value.to_value()["x"].as_i64().unwrap_or(i64::MIN),
            )
        })
        .collect()
}

fn owned(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(k, x)| ((*k).to_owned(), *x)).collect()
}

fn applied(outcome: Outcome) -> (u64, String, Option<Value>) {
    match outcome {
        Outcome::Applied(change) => (
            change.seq,
            change.key.to_string(),
            change.value.map(|v| v.to_value()),
        ),
        other => panic!("expected applied, got {other:?}"),
    }
}

fn malformed(outcome: Outcome) -> MalformedError {
    match outcome {
        Outcome::Malformed(error) => error,
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn a_new_merger_awaits_a_base_and_requests_the_initial_fetch_once() {
    let mut merger = Merger::new(Arc::new(spec()));
    assert!(!merger.is_synced());
    assert!(!merger.has_state());
    assert_eq!(merger.export(), None);
    assert_eq!(merger.epoch(), 1);
    assert_eq!(
        merger.fetch_request(),
        Some(FetchRequest {
            epoch: 1,
            reason: ResnapshotReason::Initial
        })
    );
    assert_eq!(merger.fetch_request(), None);
    assert_eq!(
        (merger.version(), merger.change_seq(), merger.len()),
        (None, 0, 0)
    );
    assert!(merger.is_empty());
}

#[test]
fn deltas_before_the_base_are_stale_at_or_below_its_version_and_the_rest_apply_once_in_order() {
    let mut merger = Merger::new(Arc::new(spec()));
    let deltas = [
        delta("a", 3, 30),
        delta("a", 4, 40),
        delta("b", 5, 50),
        delta("a", 6, 60),
        delta("a", 6, 61),
        delta("a", 7, 70),
        delta("c", 8, 80),
    ];
    for data in &deltas {
        assert_eq!(merger.offer(&message(data)), Outcome::Buffered);
    }
    assert_eq!(merger.buffered(), deltas.len());
    assert_eq!(xs(&merger), []);

    let done = merger
        .load_base(1, base(5, &[("a", 4), ("b", 5), ("z", 0)]).as_bytes())
        .unwrap();
    assert_eq!(
        done,
        BaseApplied {
            entities: 4,
            version: Some(8),
            replayed: Counts {
                applied: 3,
                stale: 3,
                duplicate: 1,
                ignored: 0,
                malformed: 0,
            },
            resnapshot: None,
        }
    );
    assert_eq!(
        xs(&merger),
        owned(&[("a", 70), ("b", 5), ("c", 80), ("z", 0)])
    );
    assert!(merger.is_synced() && merger.has_state());
    assert_eq!(merger.buffered(), 0);
    assert_eq!(merger.fetch_request(), None);
    // One change for the whole base state; the replayed deltas are part of it.
    assert_eq!(merger.change_seq(), 1);

    let (seq, key, value) = applied(merger.offer(&message(&delta("b", 9, 90))));
    assert_eq!((seq, key.as_str()), (2, "b"));
    assert_eq!(value, Some(json!({"id": "b", "v": 9, "x": 90})));
    assert_eq!(merger.change_seq(), 2);
}

#[test]
fn the_base_replaces_every_entity_and_whole_items_are_the_values() {
    let mut merger = loaded(spec(), &base(1, &[("a", 1), ("b", 2)]));
    merger.offer(&message(&delta("c", 2, 3)));
    assert_eq!(
        merger.offer(&message(&delta("a", 4, 0))),
        Outcome::Resnapshot(ResnapshotReason::Gap)
    );
    let request = merger.fetch_request().unwrap();
    let body = json!({"v": 10, "items": [{"id": 7, "x": 70, "extra": [1]}]}).to_string();
    merger.load_base(request.epoch, body.as_bytes()).unwrap();
    assert_eq!(xs(&merger), owned(&[("7", 70)]));
    assert_eq!(
        merger.get("7").map(|v| v.to_value()),
        Some(json!({"id": 7, "x": 70, "extra": [1]}))
    );
}

#[test]
fn order_book_ranges_straddling_the_base_version_apply_and_later_ones_are_gaps() {
    // (U, u) of the first delta after a base at lastUpdateId 100.
    let cases: [((u64, u64), Outcome, Option<u64>); 7] = [
        ((90, 99), Outcome::Stale, Some(100)),
        ((95, 100), Outcome::Stale, Some(100)),
        ((100, 101), applied_marker(), Some(101)),
        ((101, 101), applied_marker(), Some(101)),
        ((99, 150), applied_marker(), Some(150)),
        ((101, 150), applied_marker(), Some(150)),
        (
            (102, 105),
            Outcome::Resnapshot(ResnapshotReason::Gap),
            Some(100),
        ),
    ];
    let body = json!({"lastUpdateId": 100, "items": [{"id": "BTC", "x": 1}]}).to_string();
    for ((first, last), expected, version) in cases {
        let data = json!({"id": "BTC", "U": first, "u": last, "x": last}).to_string();

        // Offered while synced.
        let mut merger = loaded(binance(), &body);
        let outcome = merger.offer(&message(&data));
        assert_eq!(
            outcome.as_str(),
            expected.as_str(),
            "synced ({first}, {last})"
        );
        assert_eq!(outcome_reason(&outcome), outcome_reason(&expected));
        assert_eq!(merger.version(), version, "synced ({first}, {last})");

        // Buffered before the base, then replayed.
        let mut merger = Merger::new(Arc::new(binance()));
        assert_eq!(merger.offer(&message(&data)), Outcome::Buffered);
        let done = merger.load_base(1, body.as_bytes()).unwrap();
        assert_eq!(done.version, version, "replayed ({first}, {last})");
        let expected_counts = match expected {
            Outcome::Stale => Counts {
                stale: 1,
                ..Counts::default()
            },
            Outcome::Applied(_) => Counts {
                applied: 1,
                ..Counts::default()
            },
            _ => Counts::default(),
        };
        assert_eq!(done.replayed, expected_counts, "replayed ({first}, {last})");
        assert_eq!(done.resnapshot, outcome_reason(&expected));
    }
}

/// Stands for "applied" in a table (compared by label only).
fn applied_marker() -> Outcome {
    Outcome::Applied(sluice_merge::Change {
        seq: 0,
        key: "".into(),
        value: None,
    })
}

fn outcome_reason(outcome: &Outcome) -> Option<ResnapshotReason> {
    match outcome {
        Outcome::Resnapshot(reason) => Some(*reason),
        _ => None,
    }
}

#[test]
fn order_book_deltas_after_the_first_must_continue_from_the_last_version() {
    let body = json!({"lastUpdateId": 100, "items": []}).to_string();
    let mut merger = loaded(binance(), &body);
    let range =
        |first: u64, last: u64| json!({"id": "BTC", "U": first, "u": last, "x": last}).to_string();
    assert_eq!(merger.offer(&message(&range(99, 105))).as_str(), "applied");
    assert_eq!(merger.offer(&message(&range(106, 110))).as_str(), "applied");
    assert_eq!(merger.offer(&message(&range(104, 110))), Outcome::Duplicate);
    assert_eq!(merger.offer(&message(&range(90, 100))), Outcome::Stale);
    assert_eq!(merger.version(), Some(110));
    assert_eq!(
        merger.offer(&message(&range(112, 120))),
        Outcome::Resnapshot(ResnapshotReason::Gap)
    );
}

#[test]
fn a_range_whose_first_version_is_above_its_last_is_malformed() {
    let body = json!({"lastUpdateId": 100, "items": []}).to_string();
    let mut merger = loaded(binance(), &body);
    let data = json!({"id": "BTC", "U": 105, "u": 101}).to_string();
    assert_eq!(
        malformed(merger.offer(&message(&data))),
        MalformedError::BadVersion {
            pointer: "/U".into()
        }
    );
    assert_eq!(merger.version(), Some(100));
}

#[test]
fn a_gap_while_synced_asks_for_a_base_keeps_the_state_readable_and_holds_the_delta() {
    let mut merger = loaded(spec(), &base(5, &[("a", 1)]));
    assert_eq!(
        merger.offer(&message(&delta("a", 7, 70))),
        Outcome::Resnapshot(ResnapshotReason::Gap)
    );
    assert!(!merger.is_synced());
    assert!(merger.has_state());
    assert_eq!(xs(&merger), owned(&[("a", 1)]));
    assert_eq!(merger.version(), Some(5));
    assert_eq!(merger.buffered(), 1);
    assert_eq!(merger.epoch(), 2);
    assert_eq!(
        merger.fetch_request(),
        Some(FetchRequest {
            epoch: 2,
            reason: ResnapshotReason::Gap
        })
    );
    assert!(merger.export().is_some());

    assert_eq!(
        merger.offer(&message(&delta("b", 8, 80))),
        Outcome::Buffered
    );
    assert_eq!(xs(&merger), owned(&[("a", 1)]));
    let err = merger.load_base(1, base(6, &[]).as_bytes()).unwrap_err();
    assert_eq!(err.kind(), "superseded");

    let done = merger
        .load_base(2, base(6, &[("a", 6)]).as_bytes())
        .unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 2,
            ..Counts::default()
        }
    );
    assert_eq!(done.resnapshot, None);
    assert_eq!(xs(&merger), owned(&[("a", 70), ("b", 80)]));
    assert_eq!((merger.version(), merger.change_seq()), (Some(8), 2));
    assert!(merger.is_synced());
}

#[test]
fn a_gap_during_replay_keeps_the_rest_held_and_asks_for_another_base() {
    let mut merger = Merger::new(Arc::new(spec()));
    merger.fetch_request();
    for (v, x) in [(3, 30), (4, 40), (6, 60), (7, 70)] {
        merger.offer(&message(&delta("a", v, x)));
    }
    let done = merger
        .load_base(1, base(2, &[("a", 20)]).as_bytes())
        .unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 2,
            ..Counts::default()
        }
    );
    assert_eq!(done.resnapshot, Some(ResnapshotReason::Gap));
    assert_eq!(done.version, Some(4));
    assert!(!merger.is_synced());
    assert!(merger.has_state());
    assert_eq!(merger.buffered(), 2);
    assert_eq!(merger.change_seq(), 1);
    assert_eq!(xs(&merger), owned(&[("a", 40)]));
    assert_eq!(
        merger.fetch_request(),
        Some(FetchRequest {
            epoch: 2,
            reason: ResnapshotReason::Gap
        })
    );
    assert_eq!(
        merger.offer(&message(&delta("a", 8, 80))),
        Outcome::Buffered
    );

    let done = merger
        .load_base(2, base(5, &[("a", 50)]).as_bytes())
        .unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 3,
            ..Counts::default()
        }
    );
    assert_eq!(xs(&merger), owned(&[("a", 80)]));
    assert_eq!((merger.version(), merger.change_seq()), (Some(8), 2));
}

#[test]
fn without_contiguity_versions_only_have_to_increase() {
    let spec = MergeSpec {
        contiguous: false,
        ..spec()
    };
    let mut merger = Merger::new(Arc::new(spec));
    for (v, x) in [(5, 5), (20, 20), (15, 15), (30, 30)] {
        merger.offer(&message(&delta("a", v, x)));
    }
    let done = merger.load_base(1, base(10, &[]).as_bytes()).unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 2,
            stale: 1,
            duplicate: 1,
            ..Counts::default()
        }
    );
    assert_eq!(xs(&merger), owned(&[("a", 30)]));
    assert_eq!(
        merger.offer(&message(&delta("a", 30, 0))),
        Outcome::Duplicate
    );
    assert_eq!(
        merger.offer(&message(&delta("a", 25, 0))),
        Outcome::Duplicate
    );
    assert_eq!(merger.offer(&message(&delta("a", 7, 0))), Outcome::Stale);
    assert_eq!(
        merger.offer(&message(&delta("a", 1000, 1000))).as_str(),
        "applied"
    );
    assert_eq!(merger.version(), Some(1000));
    assert!(merger.is_synced());
}

#[test]
fn a_version_not_newer_than_the_state_is_a_duplicate() {
    let mut merger = loaded(spec(), &base(5, &[]));
    assert_eq!(
        merger.offer(&message(&delta("a", 6, 60))).as_str(),
        "applied"
    );
    assert_eq!(
        merger.offer(&message(&delta("a", 6, 61))),
        Outcome::Duplicate
    );
    assert_eq!(merger.change_seq(), 2);
    assert_eq!(xs(&merger), owned(&[("a", 60)]));
}

#[test]
fn versions_may_be_decimal_strings() {
    let mut merger = loaded(spec(), &json!({"v": "5", "items": []}).to_string());
    assert_eq!(merger.version(), Some(5));
    let data = json!({"id": "a", "v": "6", "x": 1}).to_string();
    assert_eq!(merger.offer(&message(&data)).as_str(), "applied");
    assert_eq!(merger.version(), Some(6));
}

#[test]
fn unversioned_duplicates_are_found_by_sse_id_within_the_window() {
    let spec = MergeSpec {
        dedupe_window: 2,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        ..unversioned()
    };
    let mut merger = loaded(spec, &json!({"items": []}).to_string());
    let with_id = |id, data: &'static str| Input {
        id: Some(id),
        ..Input::new("message", data.as_bytes())
    };
    assert_eq!(
        merger.offer(&with_id("1", r#"{"id":"a","x":1}"#)).as_str(),
        "applied"
    );
    // A malformed delta is not remembered: its id may come again, well formed.
    assert_eq!(
        merger.offer(&with_id("2", r#"{"x":2}"#)).as_str(),
        "malformed"
    );
    assert_eq!(
        merger.offer(&with_id("2", r#"{"id":"a","x":2}"#)).as_str(),
        "applied"
    );
    assert_eq!(
        merger.offer(&with_id("1", r#"{"id":"a","x":9}"#)),
        Outcome::Duplicate
    );
    assert_eq!(
        merger.offer(&with_id("3", r#"{"id":"a","x":3}"#)).as_str(),
        "applied"
    );
    // "1" has left the window of two.
    assert_eq!(
        merger.offer(&with_id("1", r#"{"id":"a","x":4}"#)).as_str(),
        "applied"
    );
    // Without an id nothing can be a duplicate.
    let no_id = r#"{"id":"a","x":5}"#;
    assert_eq!(merger.offer(&message(no_id)).as_str(), "applied");
    assert_eq!(merger.offer(&message(no_id)).as_str(), "applied");
    assert_eq!(merger.version(), None);
    assert_eq!(merger.export().unwrap().recent_ids, ["3", "1"]);
}

#[test]
fn an_unversioned_delta_whose_id_was_carried_forward_is_not_a_duplicate() {
    // The worker's `sse.id` is the last id seen: events without an `id:` line carry it forward.
    let with_id = |id, data: &'static str| Input {
        id: Some(id),
        ..Input::new("message", data.as_bytes())
    };
    let mut merger = loaded(unversioned(), &json!({"items": []}).to_string());
    for (id, data) in [
        ("7", r#"{"id":"a","x":1}"#),
        ("7", r#"{"id":"b","x":2}"#),
        ("7", r#"{"id":"a","x":3}"#),
        ("8", r#"{"id":"c","x":4}"#),
    ] {
        assert_eq!(
            merger.offer(&with_id(id, data)).as_str(),
            "applied",
            "{id} {data}"
        );
    }
    assert_eq!(xs(&merger), owned(&[("a", 3), ("b", 2), ("c", 4)]));
    // A replay of "7" after "8" is provably one (the run of "7" ended).
    assert_eq!(
        merger.offer(&with_id("7", r#"{"id":"a","x":1}"#)),
        Outcome::Duplicate
    );
    // The same across a snapshot: the run of the last id continues after a restore.
    let mut restored = Merger::restore(Arc::new(unversioned()), merger.export().unwrap());
    assert_eq!(
        restored
            .offer(&with_id("8", r#"{"id":"d","x":5}"#))
            .as_str(),
        "applied"
    );
    assert_eq!(
        restored.offer(&with_id("7", r#"{"id":"a","x":1}"#)),
        Outcome::Duplicate
    );
}

#[test]
fn unversioned_duplicates_held_before_the_base_are_dropped_on_replay() {
    let mut merger = Merger::new(Arc::new(unversioned()));
    for (id, x) in [("1", 1), ("2", 2), ("1", 9)] {
        let data = json!({"id": "a", "x": x}).to_string();
        let input = Input {
            id: Some(id),
            ..message(&data)
        };
        assert_eq!(merger.offer(&input), Outcome::Buffered);
    }
    let done = merger
        .load_base(1, json!({"items": []}).to_string().as_bytes())
        .unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 2,
            duplicate: 1,
            ..Counts::default()
        }
    );
    assert_eq!(xs(&merger), owned(&[("a", 2)]));
}

#[test]
fn versioned_targets_keep_no_id_window() {
    let mut merger = loaded(spec(), &base(0, &[]));
    for v in [1, 2] {
        let data = delta("a", v, 0);
        let input = Input {
            id: Some("same"),
            ..message(&data)
        };
        assert_eq!(merger.offer(&input).as_str(), "applied");
    }
    assert!(merger.export().unwrap().recent_ids.is_empty());
}

#[test]
fn a_new_generation_without_resume_asks_for_a_base_and_with_resume_does_not() {
    let generation = |connection, resume, data: &'static str| Input {
        connection: Some(connection),
        resume,
        ..Input::new("message", data.as_bytes())
    };
    let mut merger = Merger::restore(
        Arc::new(unversioned()),
        TargetSnapshot {
            version: None,
            change_seq: 10,
            last_connection: Some(1),
            recent_ids: Vec::new(),
            entities: [("a".to_owned(), json!({"id": "a", "x": 0}).into())].into(),
        },
    );
    let cases: [(u64, Option<&str>, &str); 4] = [
        (1, None, "applied"),
        // A new connection that resumed from an id: nothing lost.
        (2, Some("41"), "applied"),
        // No resume header on a new connection (not its first record): nothing to go by.
        (3, None, "applied"),
        // The same connection with an empty resume header is not a new generation.
        (3, Some(""), "applied"),
    ];
    for (connection, resume, expected) in cases {
        let outcome = merger.offer(&generation(connection, resume, r#"{"id":"a","x":1}"#));
        assert_eq!(
            outcome.as_str(),
            expected,
            "connection {connection} resume {resume:?}"
        );
    }
    assert!(merger.is_synced());
    assert_eq!(merger.fetch_request(), None);

    let outcome = merger.offer(&generation(4, Some(""), r#"{"id":"a","x":4}"#));
    assert_eq!(outcome, Outcome::Resnapshot(ResnapshotReason::Generation));
    assert!(!merger.is_synced() && merger.has_state());
    assert_eq!(merger.last_connection(), Some(4));
    assert_eq!(merger.buffered(), 1);
    assert_eq!(
        merger.fetch_request(),
        Some(FetchRequest {
            epoch: 1,
            reason: ResnapshotReason::Generation
        })
    );
    assert_eq!(
        merger.offer(&generation(4, None, r#"{"id":"b","x":5}"#)),
        Outcome::Buffered
    );

    // A restarted worker counts generations from 1 again: a change all the same. What was held
    // came before the loss, so before any base state still to come: it is discarded.
    let outcome = merger.offer(&generation(1, Some(""), r#"{"id":"a","x":6}"#));
    assert_eq!(outcome, Outcome::Resnapshot(ResnapshotReason::Generation));
    assert_eq!((merger.buffered(), merger.buffer_discarded()), (1, 2));
    assert_eq!(merger.epoch(), 2);
    assert_eq!(
        merger.load_base(1, b"{\"items\":[]}").unwrap_err().kind(),
        "superseded"
    );

    // The record that started the generation is replayed once, without asking again.
    let done = merger
        .load_base(
            2,
            json!({"items": [{"id": "c", "x": 7}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 1,
            ..Counts::default()
        }
    );
    assert_eq!(done.resnapshot, None);
    assert_eq!(xs(&merger), owned(&[("a", 6), ("c", 7)]));
    assert!(merger.is_synced());
}

#[test]
fn a_new_generation_while_awaiting_the_first_base_supersedes_the_fetch_in_flight() {
    let mut merger = Merger::new(Arc::new(spec()));
    let first = merger.fetch_request().unwrap();
    let input = Input {
        connection: Some(1),
        resume: Some(""),
        ..message(r#"{"id":"a","v":3,"x":3}"#)
    };
    assert_eq!(
        merger.offer(&input),
        Outcome::Resnapshot(ResnapshotReason::Generation)
    );
    assert!(
        merger
            .load_base(first.epoch, base(2, &[]).as_bytes())
            .is_err()
    );
    let second = merger.fetch_request().unwrap();
    assert_eq!(
        second,
        FetchRequest {
            epoch: 2,
            reason: ResnapshotReason::Generation
        }
    );
    merger
        .load_base(second.epoch, base(2, &[]).as_bytes())
        .unwrap();
    assert_eq!(xs(&merger), owned(&[("a", 3)]));
}

#[test]
fn a_reset_event_asks_for_a_base_without_parsing_and_discards_what_was_held() {
    let mut merger = loaded(spec(), &base(5, &[("a", 1)]));
    let reset = Input::new("reset", b"not json at all");
    assert_eq!(
        merger.offer(&reset),
        Outcome::Resnapshot(ResnapshotReason::ResetEvent)
    );
    assert!(!merger.is_synced() && merger.has_state());
    assert_eq!(merger.buffered(), 0);
    assert_eq!(xs(&merger), owned(&[("a", 1)]));
    assert_eq!(
        merger.fetch_request(),
        Some(FetchRequest {
            epoch: 2,
            reason: ResnapshotReason::ResetEvent
        })
    );

    assert_eq!(merger.offer(&message(&delta("a", 6, 6))), Outcome::Buffered);
    assert_eq!(
        merger.offer(&reset),
        Outcome::Resnapshot(ResnapshotReason::ResetEvent)
    );
    assert_eq!(
        (merger.buffered(), merger.buffer_discarded(), merger.epoch()),
        (0, 1, 3)
    );
    assert_eq!(
        merger
            .load_base(2, base(9, &[]).as_bytes())
            .unwrap_err()
            .kind(),
        "superseded"
    );
    merger
        .load_base(3, base(9, &[("a", 9)]).as_bytes())
        .unwrap();
    assert_eq!(xs(&merger), owned(&[("a", 9)]));
}

#[test]
fn ignored_events_are_ignored_before_parsing_in_every_phase() {
    let mut merger = Merger::new(Arc::new(spec()));
    let heartbeat = Input::new("heartbeat", b"\x00 not json");
    assert_eq!(merger.offer(&heartbeat), Outcome::Ignored);
    assert_eq!(merger.buffered(), 0);
    merger.load_base(1, base(1, &[]).as_bytes()).unwrap();
    assert_eq!(merger.offer(&heartbeat), Outcome::Ignored);
    assert_eq!((merger.change_seq(), merger.version()), (1, Some(1)));
}

#[test]
fn delete_events_remove_the_entity_and_obey_the_version_rules() {
    let mut merger = loaded(spec(), &base(5, &[("a", 1), ("b", 2)]));
    let delete = |data: &'static str| Input::new("delete", data.as_bytes());

    let (seq, key, value) = applied(merger.offer(&delete(r#"{"id":"a","v":6}"#)));
    assert_eq!((seq, key.as_str(), value), (2, "a", None));
    assert_eq!(merger.get("a"), None);
    // Deleting what is not there is still a change (to nothing).
    let (seq, key, value) = applied(merger.offer(&delete(r#"{"id":"zz","v":7}"#)));
    assert_eq!((seq, key.as_str(), value), (3, "zz", None));
    assert_eq!(
        merger.offer(&delete(r#"{"id":"b","v":7}"#)),
        Outcome::Duplicate
    );
    assert_eq!(merger.offer(&delete(r#"{"id":"b","v":4}"#)), Outcome::Stale);
    assert_eq!(
        merger.offer(&delete(r#"{"v":8}"#)),
        Outcome::Malformed(MalformedError::MissingKey {
            pointer: "/id".into()
        })
    );
    assert_eq!(xs(&merger), owned(&[("b", 2)]));
    assert_eq!(merger.version(), Some(7));
    assert_eq!(
        merger.offer(&delete(r#"{"id":"b","v":9}"#)),
        Outcome::Resnapshot(ResnapshotReason::Gap)
    );
    // A held delete replays as a delete.
    let done = merger
        .load_base(2, base(8, &[("b", 2), ("c", 3)]).as_bytes())
        .unwrap();
    assert_eq!(done.replayed.applied, 1);
    assert_eq!(xs(&merger), owned(&[("c", 3)]));
}

#[test]
fn malformed_deltas_of_every_kind_leave_the_state_unchanged_and_the_target_goes_on() {
    let with_value = MergeSpec {
        value: Some("/val".into()),
        ..spec()
    };
    let json_patch = MergeSpec {
        value: Some("/val".into()),
        strategy: Strategy::JsonPatch,
        ..spec()
    };
    let long = format!(
        "{{\"id\": \"a\", \"v\": 6, \"x\": \"{}",
        "y".repeat(100_000)
    );
    let cases: Vec<(MergeSpec, String, &str, Option<&str>)> = vec![
        (spec(), "{".into(), "not_json", None),
        (spec(), long, "not_json", None),
        (spec(), r#"{"id":"a","v":6"#.into(), "not_json", None),
        (spec(), "".into(), "not_json", None),
        (
            spec(),
            r#"{"v":6,"x":1}"#.into(),
            "missing_key",
            Some("/id"),
        ),
        (spec(), r#"{"id":1.5,"v":6}"#.into(), "bad_key", Some("/id")),
        (
            spec(),
            r#"{"id":null,"v":6}"#.into(),
            "bad_key",
            Some("/id"),
        ),
        (
            spec(),
            r#"{"id":{"a":1},"v":6}"#.into(),
            "bad_key",
            Some("/id"),
        ),
        (
            spec(),
            r#"{"id":"a","x":1}"#.into(),
            "missing_version",
            Some("/v"),
        ),
        (
            spec(),
            r#"{"id":"a","v":-6}"#.into(),
            "bad_version",
            Some("/v"),
        ),
        (
            spec(),
            r#"{"id":"a","v":6.0}"#.into(),
            "bad_version",
            Some("/v"),
        ),
        (
            spec(),
            r#"{"id":"a","v":"6a"}"#.into(),
            "bad_version",
            Some("/v"),
        ),
        (
            spec(),
            r#"{"id":"a","v":null}"#.into(),
            "bad_version",
            Some("/v"),
        ),
        (
            with_value,
            r#"{"id":"a","v":6}"#.into(),
            "bad_value",
            Some("/val"),
        ),
        (
            json_patch.clone(),
            r#"{"id":"a","v":6,"val":[{"op":"test","path":"/x","value":2}]}"#.into(),
            "patch_failed",
            None,
        ),
        (
            json_patch.clone(),
            r#"{"id":"a","v":6,"val":[{"op":"remove","path":"/nope"}]}"#.into(),
            "patch_failed",
            None,
        ),
        (
            json_patch.clone(),
            r#"{"id":"a","v":6,"val":{"op":"add","path":"/y","value":1}}"#.into(),
            "not_a_patch",
            None,
        ),
        (
            json_patch.clone(),
            r#"{"id":"a","v":6,"val":[{"op":"frobnicate","path":"/y"}]}"#.into(),
            "not_a_patch",
            None,
        ),
        (
            json_patch,
            r#"{"id":"a","v":6,"val":[{"op":"add","path":"y","value":1}]}"#.into(),
            "not_a_patch",
            None,
        ),
    ];
    for (spec, data, kind, pointer) in cases {
        let mut merger = loaded(spec, &base(5, &[("a", 1)]));
        let before = merger.export();
        let error = malformed(merger.offer(&message(&data)));
        assert_eq!(error.kind(), kind, "{error}");
        let text = error.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            !text.ends_with('.') && text.starts_with(char::is_lowercase),
            "{text}"
        );
        if let Some(pointer) = pointer {
            assert!(text.contains(pointer), "{text}");
        }
        assert_eq!(merger.export(), before, "{kind}");
        assert!(merger.is_synced(), "{kind}");
        assert_eq!(merger.fetch_request(), None, "{kind}");
        // The next good delta applies where the malformed one would have.
        let next = json!({"id": "a", "v": 6, "x": 6, "val": [{"op": "replace", "path": "/x", "value": 6}]});
        assert_eq!(
            merger.offer(&message(&next.to_string())).as_str(),
            "applied",
            "{kind}"
        );
        assert_eq!(merger.version(), Some(6), "{kind}");
    }
}

#[test]
fn malformed_deltas_before_the_base_are_reported_at_once_and_never_held() {
    let mut merger = Merger::new(Arc::new(spec()));
    assert!(matches!(
        merger.offer(&message("nope")),
        Outcome::Malformed(_)
    ));
    merger.offer(&message(&delta("a", 2, 2)));
    let done = merger.load_base(1, base(1, &[]).as_bytes()).unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 1,
            ..Counts::default()
        }
    );
}

#[test]
fn a_superseded_epoch_changes_nothing() {
    let mut merger = Merger::new(Arc::new(spec()));
    merger.offer(&message(&delta("a", 3, 3)));
    merger.offer(&Input::new("reset", b""));
    merger.offer(&message(&delta("a", 4, 4)));
    let err = merger
        .load_base(1, base(3, &[("a", 3)]).as_bytes())
        .unwrap_err();
    assert!(matches!(
        err,
        BaseError::Superseded {
            epoch: 1,
            current: 2
        }
    ));
    assert!(!err.is_retryable());
    assert!(!merger.has_state());
    assert_eq!((merger.buffered(), merger.change_seq()), (1, 0));

    merger
        .load_base(2, base(3, &[("a", 3)]).as_bytes())
        .unwrap();
    assert_eq!(xs(&merger), owned(&[("a", 4)]));
    // An epoch loads once.
    let err = merger.load_base(2, base(3, &[]).as_bytes()).unwrap_err();
    assert_eq!(err.kind(), "superseded");
    assert_eq!(xs(&merger), owned(&[("a", 4)]));
    assert_eq!(merger.change_seq(), 1);
}

#[test]
fn a_bad_base_document_changes_nothing() {
    let cases = [
        ("{", "not_json"),
        (r#"{"v":1}"#, "items"),
        (r#"{"v":1,"items":{"a":1}}"#, "items"),
        (r#"{"v":1,"items":[{"id":"a"},{"x":1}]}"#, "key"),
        (r#"{"v":1,"items":[{"id":1.5}]}"#, "key"),
        (r#"{"items":[]}"#, "version"),
        (r#"{"v":"x","items":[]}"#, "version"),
        (r#"{"v":-1,"items":[]}"#, "version"),
        (
            r#"{"v":1,"items":[{"id":"a"},{"id":"a"}]}"#,
            "duplicate_key",
        ),
        (r#"{"v":1,"items":[{"id":"1"},{"id":1}]}"#, "duplicate_key"),
    ];
    let mut merger = loaded(spec(), &base(5, &[("a", 1)]));
    merger.offer(&message(&delta("a", 7, 7)));
    merger.offer(&message(&delta("a", 8, 8)));
    let epoch = merger.fetch_request().unwrap().epoch;
    for (body, kind) in cases {
        let err = merger.load_base(epoch, body.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), kind, "{body}: {err}");
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(
            !text.ends_with('.') && text.starts_with(char::is_lowercase),
            "{text}"
        );
        assert_eq!(xs(&merger), owned(&[("a", 1)]));
        assert_eq!(
            (merger.buffered(), merger.epoch(), merger.change_seq()),
            (2, epoch, 1)
        );
        assert!(!merger.is_synced());
    }
    merger
        .load_base(epoch, base(6, &[("a", 6)]).as_bytes())
        .unwrap();
    assert_eq!(xs(&merger), owned(&[("a", 8)]));
}

#[test]
fn integer_keys_are_rendered_in_decimal() {
    let mut merger = loaded(
        spec(),
        &json!({"v": 1, "items": [{"id": 7, "x": 7}]}).to_string(),
    );
    let (_, key, _) = applied(merger.offer(&message(r#"{"id":7,"v":2,"x":8}"#)));
    assert_eq!(key, "7");
    assert_eq!(xs(&merger), owned(&[("7", 8)]));
}

#[test]
fn the_value_pointer_selects_the_entity_of_a_replace() {
    let spec = MergeSpec {
        key: "/data/id".into(),
        value: Some("/data".into()),
        version: VersionSpec::Single("/seq".into()),
        ..spec()
    };
    let mut merger = loaded(spec, &base(1, &[]));
    let (_, key, value) = applied(merger.offer(&message(r#"{"seq":2,"data":{"id":"a","x":2}}"#)));
    assert_eq!(
        (key.as_str(), value),
        ("a", Some(json!({"id": "a", "x": 2})))
    );
}

#[test]
fn a_merge_patch_builds_an_unknown_entity_from_an_empty_object() {
    let spec = MergeSpec {
        strategy: Strategy::MergePatch,
        ..spec()
    };
    let mut merger = loaded(spec, &base(1, &[("a", 1)]));
    merger.offer(&message(r#"{"id":"a","v":2,"y":2}"#));
    merger.offer(&message(r#"{"id":"b","v":3,"x":null,"y":3}"#));
    assert_eq!(
        merger.get("a").unwrap().to_value(),
        json!({"id": "a", "v": 2, "x": 1, "y": 2})
    );
    assert_eq!(
        merger.get("b").unwrap().to_value(),
        json!({"id": "b", "v": 3, "y": 3})
    );
}

#[test]
fn a_json_patch_for_an_unknown_entity_asks_for_a_base_and_applies_after_it() {
    let spec = MergeSpec {
        value: Some("/ops".into()),
        strategy: Strategy::JsonPatch,
        ..spec()
    };
    let patch = |id: &str, v: u64, x: i64| {
        json!({"id": id, "v": v, "ops": [{"op": "replace", "path": "/x", "value": x}]}).to_string()
    };
    let mut merger = loaded(spec, &base(1, &[("a", 1)]));
    assert_eq!(
        merger.offer(&message(&patch("a", 2, 2))).as_str(),
        "applied"
    );
    assert_eq!(
        merger.offer(&message(&patch("b", 3, 3))),
        Outcome::Resnapshot(ResnapshotReason::UnknownEntity)
    );
    assert_eq!(merger.buffered(), 1);
    assert_eq!(
        merger.fetch_request(),
        Some(FetchRequest {
            epoch: 2,
            reason: ResnapshotReason::UnknownEntity
        })
    );
    // The fresh base has it: the held patch applies.
    let done = merger
        .load_base(2, base(2, &[("a", 2), ("b", 0)]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.applied, done.resnapshot), (1, None));
    assert_eq!(xs(&merger), owned(&[("a", 2), ("b", 3)]));

    // The fresh base does not have it either: the patch cannot apply, and the target goes on
    // instead of asking forever.
    assert_eq!(
        merger.offer(&message(&patch("c", 4, 4))),
        Outcome::Resnapshot(ResnapshotReason::UnknownEntity)
    );
    let done = merger
        .load_base(3, base(3, &[("a", 2), ("b", 3)]).as_bytes())
        .unwrap();
    assert_eq!((done.replayed.malformed, done.resnapshot), (1, None));
    assert!(merger.is_synced());
    assert_eq!(xs(&merger), owned(&[("a", 2), ("b", 3)]));
}

#[test]
fn a_json_patch_on_an_unknown_entity_held_before_the_first_base_asks_again() {
    let spec = MergeSpec {
        value: Some("/ops".into()),
        strategy: Strategy::JsonPatch,
        ..spec()
    };
    let mut merger = Merger::new(Arc::new(spec));
    let ops = json!({"id": "b", "v": 3, "ops": [{"op": "add", "path": "/y", "value": 1}]});
    merger.offer(&message(&ops.to_string()));
    let done = merger
        .load_base(1, base(2, &[("a", 1)]).as_bytes())
        .unwrap();
    assert_eq!(done.resnapshot, Some(ResnapshotReason::UnknownEntity));
    assert_eq!(merger.buffered(), 1);
    assert!(!merger.is_synced());
}

#[test]
fn a_full_buffer_without_contiguous_versions_is_a_gap_not_a_silent_drop() {
    let increasing = MergeSpec {
        contiguous: false,
        ..spec()
    };
    for spec in [unversioned(), increasing] {
        let spec = MergeSpec {
            max_buffered: 3,
            ..spec
        };
        let mut merger = Merger::new(Arc::new(spec));
        let first = merger.fetch_request().unwrap();
        for v in 1..=3 {
            let outcome = merger.offer(&message(&delta("a", v, v as i64)));
            assert_eq!(outcome, Outcome::Buffered);
        }
        // The fourth would push out the first, which the base in flight may not hold.
        assert_eq!(
            merger.offer(&message(&delta("a", 4, 4))),
            Outcome::Resnapshot(ResnapshotReason::BufferFull)
        );
        assert!(!merger.is_synced());
        assert_eq!(merger.buffer_dropped(), 0);
        assert_eq!((merger.buffered(), merger.buffer_discarded()), (1, 3));
        // The base being fetched is refused: it may lack the deltas let go.
        assert!(matches!(
            merger.load_base(first.epoch, base(0, &[]).as_bytes()),
            Err(BaseError::Superseded { .. })
        ));
        let fresh = merger.fetch_request().unwrap();
        assert_eq!(fresh.reason, ResnapshotReason::BufferFull);
        assert_eq!(fresh.epoch, first.epoch + 1);
        let done = merger
            .load_base(fresh.epoch, base(3, &[("a", 3)]).as_bytes())
            .unwrap();
        assert_eq!(done.replayed.applied, 1);
        assert_eq!(xs(&merger), owned(&[("a", 4)]));
        assert!(merger.is_synced());
    }
}

#[test]
fn a_full_buffer_of_contiguous_versions_drops_its_oldest_deltas() {
    let spec = MergeSpec {
        max_buffered: 3,
        ..spec()
    };
    let mut merger = Merger::new(Arc::new(spec));
    for v in 1..=5 {
        assert_eq!(
            merger.offer(&message(&delta("a", v, v as i64))),
            Outcome::Buffered
        );
    }
    assert_eq!((merger.buffered(), merger.buffer_dropped()), (3, 2));
    let done = merger.load_base(1, base(2, &[]).as_bytes()).unwrap();
    assert_eq!(
        done.replayed,
        Counts {
            applied: 3,
            ..Counts::default()
        }
    );
    assert_eq!((merger.version(), merger.buffer_dropped()), (Some(5), 2));
}

#[test]
fn export_and_restore_through_json_preserve_everything() {
    let with_id = |id: &'static str, data: &'static str| Input {
        id: Some(id),
        connection: Some(3),
        ..Input::new("message", data.as_bytes())
    };
    let mut merger = loaded(
        unversioned(),
        &json!({"items": [{"id": 1, "x": 1}]}).to_string(),
    );
    merger.offer(&with_id("e1", r#"{"id":"a","x":1}"#));
    merger.offer(&with_id(
        "e2",
        r#"{"id":"b","x":2,"deep":{"k":[1,2.5,null]}}"#,
    ));
    let snap = merger.export().unwrap();
    assert_eq!(snap.change_seq, 3);
    assert_eq!(snap.recent_ids, ["e1", "e2"]);
    assert_eq!(snap.last_connection, Some(3));

    let text = serde_json::to_string(&snap).unwrap();
    let back: TargetSnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);
    let mut restored = Merger::restore(Arc::new(unversioned()), back);
    assert!(restored.is_synced() && restored.has_state());
    assert_eq!(restored.fetch_request(), None);
    assert_eq!(restored.export(), Some(snap));
    assert_eq!(
        restored.entities().collect::<Vec<_>>(),
        merger.entities().collect::<Vec<_>>()
    );
    // The dedupe window, the change sequence and the connection carry over ("e2", the last
    // id, would be carried forward: not a duplicate).
    assert_eq!(
        restored.offer(&with_id("e1", r#"{"id":"b","x":9}"#)),
        Outcome::Duplicate
    );
    let same_connection = Input {
        resume: Some(""),
        ..with_id("e3", r#"{"id":"c","x":3}"#)
    };
    let (seq, _, _) = applied(restored.offer(&same_connection));
    assert_eq!(seq, 4);

    // A versioned target: the version carries over and the next delta must follow it.
    let mut merger = loaded(spec(), &base(5, &[("a", 1)]));
    merger.offer(&message(&delta("a", 6, 6)));
    let snap: TargetSnapshot =
        serde_json::from_str(&serde_json::to_string(&merger.export().unwrap()).unwrap()).unwrap();
    assert_eq!((snap.version, snap.change_seq), (Some(6), 2));
    let mut restored = Merger::restore(Arc::new(spec()), snap);
    assert_eq!(restored.version(), Some(6));
    assert_eq!(
        restored.offer(&message(&delta("a", 6, 0))),
        Outcome::Duplicate
    );
    assert_eq!(
        restored.offer(&message(&delta("a", 8, 0))),
        Outcome::Resnapshot(ResnapshotReason::Gap)
    );
    assert_eq!(
        restored.fetch_request(),
        Some(FetchRequest {
            epoch: 1,
            reason: ResnapshotReason::Gap
        })
    );
}

#[test]
fn export_while_a_resnapshot_is_pending_is_the_last_complete_state() {
    let mut merger = loaded(spec(), &base(5, &[("a", 1)]));
    merger.offer(&message(&delta("a", 6, 6)));
    merger.offer(&message(&delta("a", 9, 9)));
    let snap = merger.export().unwrap();
    assert_eq!(snap.version, Some(6));
    assert_eq!(snap.entities["a"].to_value()["x"], json!(6));
}

#[test]
fn every_change_advances_the_sequence_by_one() {
    let mut merger = Merger::new(Arc::new(spec()));
    merger.offer(&message(&delta("a", 2, 2)));
    merger.offer(&message(&delta("a", 3, 3)));
    merger.load_base(1, base(1, &[]).as_bytes()).unwrap();
    assert_eq!(merger.change_seq(), 1);
    for v in 4..=6 {
        let (seq, _, _) = applied(merger.offer(&message(&delta("b", v, 0))));
        assert_eq!(seq, v - 2);
        assert_eq!(merger.change_seq(), seq);
    }
    merger.offer(&message(&delta("b", 6, 0)));
    merger.offer(&message("{"));
    assert_eq!(merger.change_seq(), 4);
}

#[test]
fn labels_are_distinct() {
    let reasons: Vec<_> = ResnapshotReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "initial",
            "gap",
            "unknown_entity",
            "generation",
            "reset_event",
            "offset_out_of_range",
            "buffer_full"
        ]
    );
    let outcomes = [
        applied_marker(),
        Outcome::Buffered,
        Outcome::Stale,
        Outcome::Duplicate,
        Outcome::Ignored,
        Outcome::Malformed(MalformedError::NotAPatch),
        Outcome::Resnapshot(ResnapshotReason::Gap),
    ];
    let mut labels: Vec<_> = outcomes.iter().map(Outcome::as_str).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), outcomes.len());
}

#[test]
fn a_replaced_entity_is_kept_and_served_as_the_text_it_came_as() {
    // The whole delta is the entity: its spacing and number spelling survive, no tree is built.
    let mut merger = loaded(spec(), &base(0, &[("a", 0)]));
    let sent = r#"  {"id": "a", "v": 1, "x": 1.50, "nested": {"k": [1, 2]}} "#;
    assert!(matches!(merger.offer(&message(sent)), Outcome::Applied(_)));
    let entity = merger.get("a").unwrap();
    assert_eq!(serde_json::to_string(entity).unwrap(), sent.trim());
    assert_eq!(
        entity.to_value(),
        json!({"id": "a", "v": 1, "x": 1.5, "nested": {"k": [1, 2]}})
    );

    // With a value pointer only the pointed-at member is kept, and it must be there.
    let mut merger = loaded(
        MergeSpec {
            value: Some("/data".into()),
            ..spec()
        },
        &base(0, &[("a", 0)]),
    );
    let sent = r#"{"id":"a","v":1,"data":{"x" : 2},"extra":[true, null]}"#;
    assert!(matches!(merger.offer(&message(sent)), Outcome::Applied(_)));
    let kept = serde_json::to_string(merger.get("a").unwrap()).unwrap();
    assert_eq!(kept, r#"{"x" : 2}"#);
    assert!(matches!(
        merger.offer(&message(r#"{"id":"a","v":2}"#)),
        Outcome::Malformed(MalformedError::BadValue { .. })
    ));

    // Invalid UTF-8 anywhere in the delta (even in a member no pointer reads) is not JSON.
    let mut bytes = br#"{"id":"a","v":2,"note":"#.to_vec();
    bytes.extend_from_slice(b"\"\xff\"}");
    assert!(matches!(
        merger.offer(&Input::new("message", &bytes)),
        Outcome::Malformed(MalformedError::NotJson(_))
    ));
    assert_eq!(merger.get("a").unwrap().to_value(), json!({"x": 2}));
}

#[test]
fn changes_without_values_move_the_state_exactly_as_changes_with_them() {
    for strategy in [Strategy::Replace, Strategy::MergePatch, Strategy::JsonPatch] {
        let spec = MergeSpec {
            strategy,
            value: (strategy == Strategy::JsonPatch).then(|| "/patch".into()),
            ..spec()
        };
        let body = base(1, &[("a", 1), ("b", 2)]);
        let mut with = loaded(spec.clone(), &body);
        let mut without = loaded(spec, &body);
        let deltas: Vec<(String, &str)> = match strategy {
            Strategy::JsonPatch => vec![
                (
                    json!({"id": "a", "v": 2, "patch": [{"op": "replace", "path": "/x", "value": 5}]}).to_string(),
                    "message",
                ),
                (json!({"id": "b", "v": 3}).to_string(), "delete"),
            ],
            _ => vec![
                (delta("a", 2, 5), "message"),
                (delta("c", 3, 7), "message"),
                (json!({"id": "b", "v": 4}).to_string(), "delete"),
            ],
        };
        for (data, event) in &deltas {
            let input = Input::new(event, data.as_bytes());
            let (seq_with, key_with, value_with) = applied(with.offer_with(&input, true));
            let (seq_without, key_without, value_without) =
                applied(without.offer_with(&input, false));
            assert_eq!(
                (seq_with, &key_with),
                (seq_without, &key_without),
                "{strategy:?}"
            );
            assert_eq!(value_without, None, "{strategy:?}: no value asked for");
            if *event == "delete" {
                assert_eq!(value_with, None);
            } else {
                assert_eq!(
                    value_with.as_ref(),
                    with.get(&key_with).map(|e| e.to_value()).as_ref(),
                    "{strategy:?}: the value is the entity now"
                );
            }
        }
        assert_eq!(xs(&with), xs(&without), "{strategy:?}");
        assert_eq!(with.version(), without.version());
    }
}

#[test]
fn a_malformed_delta_before_the_base_is_reported_at_once_not_buffered() {
    let mut merger = Merger::new(Arc::new(spec()));
    // Reported while its record is at hand (the aggregator dead-letters it), never held to be
    // counted and dropped when the buffer is replayed.
    let error = malformed(merger.offer(&message("{\"key\": not json")));
    assert_eq!(error.kind(), "not_json");
    assert!(matches!(
        merger.offer(&message("{\"version\": 3}")),
        Outcome::Malformed(_)
    ));
    assert_eq!(merger.offer(&message(&delta("a", 5, 1))), Outcome::Buffered);
    let applied = merger
        .load_base(1, base(4, &[("a", 0)]).as_bytes())
        .unwrap();
    assert_eq!(applied.replayed.malformed, 0);
    assert_eq!(applied.replayed.applied, 1);
    assert_eq!(xs(&merger), owned(&[("a", 1)]));
}

#[test]
fn lost_deltas_ask_for_a_fresh_base_and_drop_what_was_held() {
    let mut merger = loaded(spec(), &base(4, &[("a", 1)]));
    assert!(merger.is_synced());
    // A gap holds the delta that revealed it; losing the records after the state drops it.
    assert!(matches!(
        merger.offer(&message(&delta("a", 9, 2))),
        Outcome::Resnapshot(ResnapshotReason::Gap)
    ));
    merger.fetch_request().unwrap();
    assert_eq!(merger.buffered(), 1);
    merger.deltas_lost(ResnapshotReason::OffsetOutOfRange);
    assert!(!merger.is_synced());
    assert!(merger.has_state(), "the last complete state stays readable");
    assert_eq!(merger.buffered(), 0);
    let request = merger.fetch_request().expect("a fetch is requested");
    assert_eq!(request.reason, ResnapshotReason::OffsetOutOfRange);
    merger
        .load_base(request.epoch, base(20, &[("a", 7)]).as_bytes())
        .unwrap();
    assert_eq!(xs(&merger), owned(&[("a", 7)]));
    assert!(merger.is_synced());
}

#[test]
fn a_version_of_the_entities_stays_as_it_was_while_merging_goes_on() {
    let mut merger = loaded(spec(), &base(1, &[("a", 1), ("b", 2)]));
    let before = merger.entities_version();
    applied(merger.offer(&message(&delta("a", 2, 10))));
    applied(merger.offer(&message(&delta("c", 3, 30))));
    let delete = json!({"id": "b", "v": 4}).to_string();
    applied(merger.offer(&Input::new("delete", delete.as_bytes())));
    let x = |e: &sluice_merge::Entities| -> Vec<(String, i64)> {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.to_value()["x"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(x(&before), owned(&[("a", 1), ("b", 2)]));
    assert_eq!(
        x(&merger.entities_version()),
        owned(&[("a", 10), ("c", 30)])
    );
    assert!(before.same(&before.clone()));
    assert!(!before.same(&merger.entities_version()));
}
