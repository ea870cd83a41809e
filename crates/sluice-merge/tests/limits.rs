//! Hostile `json_patch` deltas: a patch that would make an entity larger or deeper than the
//! target's limits is refused (typed, `too_large` / `too_deep`) before it is built, the entity
//! stays as it was and the target goes on.

#![allow(clippy::unwrap_used)]

mod specs;

use std::sync::Arc;

use proptest::prelude::{Strategy as _, *};
use serde_json::{Value, json};
use sluice_merge::{EntityLimits, Input, MalformedError, MergeSpec, Merger, Outcome};

/// The shared unversioned `json_patch` target with `limits`.
fn spec(limits: EntityLimits) -> MergeSpec {
    MergeSpec {
        limits,
        ..specs::unversioned_json_patch()
    }
}

fn loaded(limits: EntityLimits, item: Value) -> Merger {
    let mut merger = Merger::new(Arc::new(spec(limits)));
    let request = merger.fetch_request().unwrap();
    let body = json!({ "items": [item] }).to_string();
    merger.load_base(request.epoch, body.as_bytes()).unwrap();
    merger
}

fn offer(merger: &mut Merger, ops: Value) -> Outcome {
    let data = json!({"id": "a", "ops": ops}).to_string();
    merger.offer(&Input::new("message", data.as_bytes()))
}

fn entity(merger: &Merger) -> Value {
    merger.get("a").unwrap().to_value()
}

/// `n` operations copying the whole entity into itself: each doubles it.
fn root_copies(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
            .collect(),
    )
}

#[test]
fn repeated_copies_of_the_root_are_refused_as_too_large_and_the_entity_is_unchanged() {
    let mut merger = loaded(
        EntityLimits::default(),
        json!({"id": "a", "x": "y".repeat(100)}),
    );
    let before = entity(&merger);
    // 64 doublings of a 100-byte entity: far past any memory, refused at the 16th or so.
    let error = match offer(&mut merger, root_copies(64)) {
        Outcome::Malformed(error) => error,
        other => panic!("expected a refused delta, got {other:?}"),
    };
    assert_eq!(error.kind(), "too_large", "{error}");
    let MalformedError::TooLarge { bytes, max, .. } = error else {
        unreachable!()
    };
    assert_eq!(max, EntityLimits::DEFAULT_MAX_ENTITY_BYTES);
    assert!(bytes > max && bytes <= 2 * max + 1024, "{bytes}");
    assert_eq!(entity(&merger), before);
    // The same attack spread over deltas: each one doubles, until one is refused.
    let limits = EntityLimits {
        max_entity_bytes: 64 * 1024,
        ..EntityLimits::default()
    };
    let mut merger = loaded(limits, json!({"id": "a", "x": "y".repeat(100)}));
    let mut refused = 0;
    for i in 0..64 {
        let copy = json!([{"op": "copy", "from": "", "path": format!("/d{i}")}]);
        match offer(&mut merger, copy) {
            Outcome::Applied(_) => {}
            Outcome::Malformed(error) if error.kind() == "too_large" => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 0);
    let size = serde_json::to_string(&entity(&merger)).unwrap().len();
    assert!(size <= limits.max_entity_bytes, "{size}");
    // The target goes on: a harmless patch still applies.
    assert!(matches!(
        offer(
            &mut merger,
            json!([{"op": "add", "path": "/ok", "value": 1}])
        ),
        Outcome::Applied(_)
    ));
    assert_eq!(entity(&merger)["ok"], 1);
}

#[test]
fn nesting_by_add_operations_is_refused_as_too_deep_and_the_entity_is_unchanged() {
    let limits = EntityLimits::default();
    let mut merger = loaded(limits, json!({"id": "a"}));
    // Each operation nests 100 levels (what serde_json parses) under the last: a few thousand
    // levels would overflow the stack when the tree is dropped or written.
    let mut nested = json!({});
    for _ in 0..99 {
        nested = json!({ "n": nested });
    }
    let mut path = String::new();
    let ops: Vec<Value> = (0..20)
        .map(|_| {
            let op = json!({"op": "add", "path": format!("{path}/d"), "value": nested.clone()});
            path.push_str("/d");
            path.push_str(&"/n".repeat(99));
            op
        })
        .collect();
    let before = entity(&merger);
    let error = match offer(&mut merger, Value::Array(ops)) {
        Outcome::Malformed(error) => error,
        other => panic!("expected a refused delta, got {other:?}"),
    };
    assert_eq!(error.kind(), "too_deep", "{error}");
    assert_eq!(
        error,
        MalformedError::TooDeep {
            operation: 0,
            depth: 101,
            max: limits.max_depth
        }
    );
    assert_eq!(entity(&merger), before);

    // One level per delta: the one past the limit is refused, the entity keeps its depth.
    let mut path = String::new();
    let mut refused = None;
    for level in 1..=limits.max_depth + 5 {
        path.push_str("/d");
        match offer(
            &mut merger,
            json!([{"op": "add", "path": path, "value": {}}]),
        ) {
            Outcome::Applied(_) => assert!(level < limits.max_depth, "{level}"),
            Outcome::Malformed(error) => {
                assert_eq!(error.kind(), "too_deep");
                refused.get_or_insert(level);
            }
            other => panic!("{other:?}"),
        }
    }
    // An object at `/d` repeated k times makes the entity k + 1 levels deep.
    assert_eq!(refused, Some(limits.max_depth));
}

#[test]
fn copying_a_large_value_onto_one_place_again_and_again_is_refused_as_too_costly() {
    let limits = EntityLimits {
        max_entity_bytes: 64 * 1024,
        ..EntityLimits::default()
    };
    let mut merger = loaded(limits, json!({"id": "a", "big": "y".repeat(10_000)}));
    let before = entity(&merger);
    // The entity never passes 21 kB, but 100,000 copies would clone 1 GB.
    let copies: Vec<Value> = (0..100_000)
        .map(|_| json!({"op": "copy", "from": "/big", "path": "/x"}))
        .collect();
    let error = match offer(&mut merger, Value::Array(copies)) {
        Outcome::Malformed(error) => error,
        other => panic!("expected a refused delta, got {other:?}"),
    };
    assert_eq!(error.kind(), "too_costly", "{error}");
    let MalformedError::TooCostly { operation, max, .. } = error else {
        unreachable!()
    };
    assert_eq!(max, EntityLimits::WORK_FACTOR * limits.max_entity_bytes);
    assert!(operation < 30, "refused at operation {operation}");
    assert_eq!(entity(&merger), before);
    // A few copies are fine.
    let copies = json!([
        {"op": "copy", "from": "/big", "path": "/x"},
        {"op": "copy", "from": "/big", "path": "/x"},
    ]);
    assert!(matches!(offer(&mut merger, copies), Outcome::Applied(_)));
}

#[test]
fn moving_a_subtree_under_itself_deeper_is_held_to_the_depth() {
    let limits = EntityLimits {
        max_entity_bytes: 1 << 20,
        max_depth: 7,
    };
    let mut merger = loaded(limits, json!({"id": "a", "a": {"b": {"c": {}}}, "z": {}}));
    let outcome = offer(
        &mut merger,
        json!([
            {"op": "add", "path": "/z/q", "value": {"r": {"s": {}}}},
            {"op": "move", "from": "/a", "path": "/z/q/r/s/a"},
        ]),
    );
    assert_eq!(
        outcome,
        Outcome::Malformed(MalformedError::TooDeep {
            operation: 1,
            depth: 8,
            max: 7
        })
    );
    assert_eq!(entity(&merger)["a"], json!({"b": {"c": {}}}));
    assert!(entity(&merger)["z"].get("q").is_none());
}

#[test]
fn an_entity_larger_than_the_limit_from_the_base_is_kept_and_may_not_grow() {
    let limits = EntityLimits {
        max_entity_bytes: 100,
        max_depth: 8,
    };
    let mut merger = loaded(limits, json!({"id": "a", "x": "y".repeat(500)}));
    assert_eq!(
        offer(
            &mut merger,
            json!([{"op": "add", "path": "/x3", "value": "z"}])
        )
        .as_str(),
        "malformed"
    );
    assert!(matches!(
        offer(
            &mut merger,
            json!([{"op": "replace", "path": "/x", "value": "short"}])
        ),
        Outcome::Applied(_)
    ));
    assert_eq!(
        offer(
            &mut merger,
            json!([{"op": "add", "path": "/x2", "value": "y".repeat(200)}])
        )
        .as_str(),
        "malformed"
    );
}

/// One operation of a random patch: adds, copies and moves between a few paths.
fn op() -> impl proptest::strategy::Strategy<Value = Value> {
    let path = prop::sample::select(vec![
        "", "/a", "/b", "/a/x", "/b/y", "/a/x/z", "/l/-", "/l/0",
    ]);
    let dest = prop::sample::select(vec![
        "/a", "/b", "/a/x", "/b/y", "/a/x/z", "/l/-", "/l/0", "/c",
    ]);
    prop_oneof![
        (dest.clone(), 0usize..3).prop_map(|(path, n)| {
            let mut value = json!("v");
            for _ in 0..n {
                value = json!({ "x": value, "l": [value.clone()] });
            }
            json!({"op": "add", "path": path, "value": value})
        }),
        (path.clone(), dest.clone())
            .prop_map(|(from, path)| json!({"op": "copy", "from": from, "path": path})),
        (path, dest.clone())
            .prop_map(|(from, path)| json!({"op": "move", "from": from, "path": path})),
        dest.prop_map(|path| json!({"op": "remove", "path": path})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the patches, no entity passes the limits, and a refused patch changes nothing.
    #[test]
    fn no_patch_sequence_passes_the_limits(patches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..40)) {
        let limits = EntityLimits { max_entity_bytes: 2_000, max_depth: 6 };
        let mut merger = loaded(limits, json!({"id": "a", "a": {}, "b": {}, "l": []}));
        for patch in patches {
            let before = entity(&merger);
            match offer(&mut merger, Value::Array(patch)) {
                Outcome::Applied(_) => {}
                Outcome::Malformed(_) => prop_assert_eq!(entity(&merger), before),
                other => prop_assert!(false, "{:?}", other),
            }
            let after = entity(&merger);
            let size = serde_json::to_string(&after).unwrap().len();
            prop_assert!(size <= limits.max_entity_bytes, "{} bytes", size);
            prop_assert!(depth(&after) <= limits.max_depth, "{}", after);
        }
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
