//! The examples of RFC 7396 (JSON Merge Patch, Appendix A) and RFC 6902 (JSON Patch, Appendix
//! A.1–A.16), each run through a merger: the original document is the entity, the patch arrives
//! as a delta `{"k": "e", "p": <patch>}`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_merge::{
    Input, MalformedError, MergeSpec, Merger, Outcome, Strategy, TargetSnapshot, VersionSpec,
};

fn spec(strategy: Strategy) -> MergeSpec {
    MergeSpec {
        base_items: "/items".into(),
        base_key: "/k".into(),
        base_version: None,
        key: "/k".into(),
        value: Some("/p".into()),
        version: VersionSpec::None,
        contiguous: false,
        strategy,
        delete_events: Vec::new(),
        ignore_events: Vec::new(),
        reset_events: Vec::new(),
        max_buffered: 10,
        dedupe_window: 10,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    }
}

/// A merger whose entity `e` is `original`.
fn holding(strategy: Strategy, original: Value) -> Merger {
    Merger::restore(
        Arc::new(spec(strategy)),
        TargetSnapshot {
            version: None,
            change_seq: 0,
            last_connection: None,
            recent_ids: Vec::new(),
            entities: [("e".to_owned(), original.into())].into(),
        },
    )
}

/// The delta carrying `patch` (raw JSON text, so that documents serde_json would not build, such
/// as duplicate members, can be written).
fn delta(patch: &str) -> String {
    format!(r#"{{"k":"e","p":{patch}}}"#)
}

fn entity(merger: &Merger) -> Value {
    merger.get("e").unwrap().to_value()
}

#[test]
fn rfc7396_appendix_a_examples_apply_as_merge_patches() {
    let rows = [
        (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
        (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
        (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
        (
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":{"b":"d","c":null}}"#,
            r#"{"a":{"b":"d"}}"#,
        ),
        (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
        (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
        (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
        (r#"{"a":"foo"}"#, r#"null"#, r#"null"#),
        (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
        (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
        (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
        (
            r#"{}"#,
            r#"{"a":{"bb":{"ccc":null}}}"#,
            r#"{"a":{"bb":{}}}"#,
        ),
    ];
    for (original, patch, result) in rows {
        let original: Value = serde_json::from_str(original).unwrap();
        let result: Value = serde_json::from_str(result).unwrap();
        let mut merger = holding(Strategy::MergePatch, original);
        let outcome = merger.offer(&Input::new("message", delta(patch).as_bytes()));
        let Outcome::Applied(change) = outcome else {
            panic!("{patch}: {outcome:?}");
        };
        assert_eq!(
            change.value.map(|v| v.to_value()),
            Some(result.clone()),
            "{patch}"
        );
        assert_eq!(entity(&merger), result, "{patch}");
    }
}

#[test]
fn rfc7396_section_3_example_applies_as_a_merge_patch() {
    let original = json!({
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged"
    });
    let patch = r#"{
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": null},
        "tags": ["example"]
    }"#;
    let mut merger = holding(Strategy::MergePatch, original);
    assert_eq!(
        merger
            .offer(&Input::new("message", delta(patch).as_bytes()))
            .as_str(),
        "applied"
    );
    assert_eq!(
        entity(&merger),
        json!({
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890"
        })
    );
}

/// How an RFC 6902 example ends.
enum Expect {
    Result(&'static str),
    /// An error: the delta is malformed and the entity is unchanged.
    Error,
}

#[test]
fn rfc6902_appendix_a_examples_apply_as_json_patches_and_errors_change_nothing() {
    let examples = [
        (
            "A.1 adding an object member",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","value":"qux"}]"#,
            Expect::Result(r#"{"baz":"qux","foo":"bar"}"#),
        ),
        (
            "A.2 adding an array element",
            r#"{"foo":["bar","baz"]}"#,
            r#"[{"op":"add","path":"/foo/1","value":"qux"}]"#,
            Expect::Result(r#"{"foo":["bar","qux","baz"]}"#),
        ),
        (
            "A.3 removing an object member",
            r#"{"baz":"qux","foo":"bar"}"#,
            r#"[{"op":"remove","path":"/baz"}]"#,
            Expect::Result(r#"{"foo":"bar"}"#),
        ),
        (
            "A.4 removing an array element",
            r#"{"foo":["bar","qux","baz"]}"#,
            r#"[{"op":"remove","path":"/foo/1"}]"#,
            Expect::Result(r#"{"foo":["bar","baz"]}"#),
        ),
        (
            "A.5 replacing a value",
            r#"{"baz":"qux","foo":"bar"}"#,
            r#"[{"op":"replace","path":"/baz","value":"boo"}]"#,
            Expect::Result(r#"{"baz":"boo","foo":"bar"}"#),
        ),
        (
            "A.6 moving a value",
            r#"{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}"#,
            r#"[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]"#,
            Expect::Result(r#"{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}"#),
        ),
        (
            "A.7 moving an array element",
            r#"{"foo":["all","grass","cows","eat"]}"#,
            r#"[{"op":"move","from":"/foo/1","path":"/foo/3"}]"#,
            Expect::Result(r#"{"foo":["all","cows","eat","grass"]}"#),
        ),
        (
            "A.8 testing a value: success",
            r#"{"baz":"qux","foo":["a",2,"c"]}"#,
            r#"[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]"#,
            Expect::Result(r#"{"baz":"qux","foo":["a",2,"c"]}"#),
        ),
        (
            "A.9 testing a value: error",
            r#"{"baz":"qux"}"#,
            r#"[{"op":"test","path":"/baz","value":"bar"}]"#,
            Expect::Error,
        ),
        (
            "A.10 adding a nested member object",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/child","value":{"grandchild":{}}}]"#,
            Expect::Result(r#"{"foo":"bar","child":{"grandchild":{}}}"#),
        ),
        (
            "A.11 ignoring unrecognized elements",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","value":"qux","xyz":123}]"#,
            Expect::Result(r#"{"foo":"bar","baz":"qux"}"#),
        ),
        (
            "A.12 adding to a nonexistent target",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz/bat","value":"qux"}]"#,
            Expect::Error,
        ),
        (
            // The RFC gives no document for A.13. JSON parsing keeps the last of duplicate
            // members, so this reads as a `remove` of /baz, which this document does not have.
            "A.13 invalid json patch document",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","value":"qux","op":"remove"}]"#,
            Expect::Error,
        ),
        (
            "A.14 ~ escape ordering",
            r#"{"/":9,"~1":10}"#,
            r#"[{"op":"test","path":"/~01","value":10}]"#,
            Expect::Result(r#"{"/":9,"~1":10}"#),
        ),
        (
            "A.15 comparing strings and numbers",
            r#"{"/":9,"~1":10}"#,
            r#"[{"op":"test","path":"/~01","value":"10"}]"#,
            Expect::Error,
        ),
        (
            "A.16 adding an array value",
            r#"{"foo":["bar"]}"#,
            r#"[{"op":"add","path":"/foo/-","value":["abc","def"]}]"#,
            Expect::Result(r#"{"foo":["bar",["abc","def"]]}"#),
        ),
    ];
    for (name, original, patch, expect) in examples {
        let original: Value = serde_json::from_str(original).unwrap();
        let mut merger = holding(Strategy::JsonPatch, original.clone());
        let outcome = merger.offer(&Input::new("message", delta(patch).as_bytes()));
        match expect {
            Expect::Result(result) => {
                let result: Value = serde_json::from_str(result).unwrap();
                let Outcome::Applied(change) = outcome else {
                    panic!("{name}: {outcome:?}");
                };
                assert_eq!(
                    change.value.map(|v| v.to_value()),
                    Some(result.clone()),
                    "{name}"
                );
                assert_eq!(entity(&merger), result, "{name}");
                assert_eq!(merger.change_seq(), 1, "{name}");
            }
            Expect::Error => {
                assert!(
                    matches!(outcome, Outcome::Malformed(MalformedError::PatchFailed(_))),
                    "{name}: {outcome:?}"
                );
                assert_eq!(entity(&merger), original, "{name}");
                assert_eq!(merger.change_seq(), 0, "{name}");
            }
        }
    }
}

#[test]
fn a_json_patch_failing_midway_leaves_the_entity_as_it_was() {
    let original = json!({"a": 1, "list": [1, 2, 3]});
    let mut merger = holding(Strategy::JsonPatch, original.clone());
    let patch = r#"[
        {"op":"replace","path":"/a","value":2},
        {"op":"remove","path":"/list/0"},
        {"op":"move","from":"/a","path":"/b"},
        {"op":"test","path":"/b","value":3}
    ]"#;
    let outcome = merger.offer(&Input::new("message", delta(patch).as_bytes()));
    assert_eq!(outcome.as_str(), "malformed");
    assert_eq!(entity(&merger), original);
}
