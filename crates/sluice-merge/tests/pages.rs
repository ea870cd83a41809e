//! Paginated base states: the pages of one fetch form one base state with the first page's
//! version, through the public API only.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_merge::{Input, MergeSpec, Merger, Strategy, VersionSpec};

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
        ignore_events: Vec::new(),
        reset_events: Vec::new(),
        max_buffered: 100,
        dedupe_window: 100,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    }
}

fn page(v: Option<u64>, items: &[(&str, i64)]) -> Vec<u8> {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, x)| json!({"id": id, "x": x}))
        .collect();
    match v {
        Some(v) => json!({"v": v, "items": items}),
        None => json!({"items": items}),
    }
    .to_string()
    .into_bytes()
}

fn xs(merger: &Merger) -> Vec<(String, i64)> {
    merger
        .entities()
        .map(|(key, value)| (key.to_owned(), value.to_value()["x"].as_i64().unwrap()))
        .collect()
}

fn owned(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(k, x)| ((*k).to_owned(), *x)).collect()
}

#[test]
fn the_pages_form_one_base_state_with_the_first_pages_version() {
    let mut merger = Merger::new(Arc::new(spec()));
    let epoch = merger.fetch_request().unwrap().epoch;
    // Held while the pages were fetched: one at the first page's version, one after it.
    let at = json!({"id": "a", "v": 5, "x": 50}).to_string();
    let after = json!({"id": "c", "v": 6, "x": 60}).to_string();
    merger.offer(&Input::new("message", at.as_bytes()));
    merger.offer(&Input::new("message", after.as_bytes()));
    let pages = [
        page(Some(5), &[("a", 1), ("b", 2)]),
        // A later page was served at a later version; only the first page's counts.
        page(Some(9), &[("c", 3)]),
        page(None, &[]),
    ];
    let applied = merger.load_base_pages(epoch, &pages).unwrap();
    assert_eq!(applied.entities, 3);
    assert_eq!((applied.replayed.stale, applied.replayed.applied), (1, 1));
    assert_eq!(merger.version(), Some(6));
    assert_eq!(xs(&merger), owned(&[("a", 1), ("b", 2), ("c", 60)]));
}

#[test]
fn an_entity_on_two_pages_keeps_the_later_copy() {
    let mut merger = Merger::new(Arc::new(spec()));
    let epoch = merger.fetch_request().unwrap().epoch;
    let pages = [
        page(Some(1), &[("a", 1), ("b", 2)]),
        page(Some(2), &[("b", 20), ("c", 3)]),
    ];
    merger.load_base_pages(epoch, &pages).unwrap();
    assert_eq!(xs(&merger), owned(&[("a", 1), ("b", 20), ("c", 3)]));
}

#[test]
fn a_bad_page_is_named_and_changes_nothing() {
    let cases: [(Vec<u8>, &str, &str); 4] = [
        (b"{".to_vec(), "not_json", "page 2 of the base state: "),
        (b"{\"v\":1}".to_vec(), "items", "page 2 of the base state: "),
        (
            page(None, &[("x", 1), ("x", 2)]),
            "duplicate_key",
            "page 2 of the base state: base state has key \"x\" twice",
        ),
        (
            b"{\"items\":[{\"x\":1}]}".to_vec(),
            "key",
            "page 2 of the base state: base state item 0",
        ),
    ];
    let mut merger = Merger::new(Arc::new(spec()));
    let epoch = merger.fetch_request().unwrap().epoch;
    for (bad, kind, starts) in cases {
        let pages = [page(Some(1), &[("a", 1)]), bad];
        let err = merger.load_base_pages(epoch, &pages).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().starts_with(starts), "{err}");
        assert!(err.is_retryable());
        assert!(!merger.is_synced() && !merger.has_state());
    }
    // The version is read from the first page only, and required there.
    let pages = [page(None, &[("a", 1)]), page(Some(1), &[])];
    let err = merger.load_base_pages(epoch, &pages).unwrap_err();
    assert_eq!(err.kind(), "version", "{err}");
    assert!(
        err.to_string().starts_with("page 1 of the base state"),
        "{err}"
    );
    let none: [Vec<u8>; 0] = [];
    assert_eq!(
        merger.load_base_pages(epoch, &none).unwrap_err().kind(),
        "no_pages"
    );
    merger
        .load_base_pages(epoch, &[page(Some(1), &[("a", 1)])])
        .unwrap();
    assert!(merger.is_synced());
}
