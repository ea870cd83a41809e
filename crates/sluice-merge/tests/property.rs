//! Wherever the base state is taken, wherever the consumer starts reading (at or before the first
//! delta the base lacks), whenever the base arrives and however many deltas are delivered twice,
//! the merged state equals all deltas applied in order to an empty state.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Strategy as _;
use serde_json::{Map, Value, json};
use sluice_merge::{Input, MergeSpec, Merger, Outcome, Strategy, VersionSpec};

/// One generated delta: entity, delete or not, two fields (`None` = null), versions covered.
#[derive(Debug, Clone)]
struct Gen {
    key: u8,
    delete: bool,
    a: Option<i8>,
    b: Option<i8>,
    width: u64,
}

struct Delta {
    event: &'static str,
    data: String,
    first: u64,
    last: u64,
}

fn spec(strategy: Strategy, ranges: bool) -> MergeSpec {
    MergeSpec {
        base_items: "/items".into(),
        base_key: "/id".into(),
        base_version: Some("/v".into()),
        key: "/id".into(),
        value: None,
        version: if ranges {
            VersionSpec::Range {
                first: "/U".into(),
                last: "/u".into(),
            }
        } else {
            VersionSpec::Single("/u".into())
        },
        contiguous: true,
        strategy,
        delete_events: vec!["delete".into()],
        ignore_events: Vec::new(),
        reset_events: Vec::new(),
        max_buffered: 1000,
        dedupe_window: 0,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    }
}

fn render(gens: &[Gen], ranges: bool) -> Vec<Delta> {
    let mut last = 0;
    gens.iter()
        .map(|g| {
            let first = last + 1;
            last = if ranges { first + g.width - 1 } else { first };
            let id = format!("k{}", g.key);
            let (event, data) = if g.delete {
                ("delete", json!({"id": id, "U": first, "u": last}))
            } else {
                (
                    "message",
                    json!({"id": id, "U": first, "u": last, "a": g.a, "b": g.b}),
                )
            };
            Delta {
                event,
                data: data.to_string(),
                first,
                last,
            }
        })
        .collect()
}

/// RFC 7396, written out again so the truth does not share code with the merger.
fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            out.remove(name);
        } else {
            let merged = merge_patch(out.get(name).unwrap_or(&Value::Null), value);
            out.insert(name.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The state after `deltas`, applied in order to an empty state.
fn truth(strategy: Strategy, deltas: &[Delta]) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for delta in deltas {
        let data: Value = serde_json::from_str(&delta.data).unwrap();
        let key = data["id"].as_str().unwrap().to_owned();
        if delta.event == "delete" {
            state.remove(&key);
            continue;
        }
        let value = match strategy {
            Strategy::Replace => data,
            _ => merge_patch(state.get(&key).unwrap_or(&json!({})), &data),
        };
        state.insert(key, value);
    }
    state
}

fn gen_delta() -> impl proptest::strategy::Strategy<Value = Gen> {
    (
        0u8..5,
        prop::bool::weighted(0.15),
        prop::option::of(any::<i8>()),
        prop::option::of(any::<i8>()),
        1u64..4,
    )
        .prop_map(|(key, delete, a, b, width)| Gen {
            key,
            delete,
            a,
            b,
            width,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_base_point_and_delivery_yields_the_state_of_all_deltas_in_order(
        merge in any::<bool>(),
        ranges in any::<bool>(),
        gens in prop::collection::vec(gen_delta(), 0..40),
        base_at in any::<Index>(),
        straddle in any::<Index>(),
        start_at in any::<Index>(),
        load_at in any::<Index>(),
        repeats in prop::collection::vec(prop::option::of(any::<Index>()), 40),
    ) {
        let strategy = if merge { Strategy::MergePatch } else { Strategy::Replace };
        let deltas = render(&gens, ranges);
        let n = deltas.len();

        // The base holds the first `b` deltas; its version may fall inside the next delta's
        // range (an order book's snapshot taken while a batch was being built).
        let b = base_at.index(n + 1);
        let mut version = if b == 0 { 0 } else { deltas[b - 1].last };
        if b < n {
            let next = &deltas[b];
            version += straddle.index((next.last - next.first + 1) as usize) as u64;
        }
        let items: Vec<Value> = truth(strategy, &deltas[..b]).into_values().collect();
        let body = json!({"v": version, "items": items}).to_string();

        // The consumer starts at or before the first delta the base lacks, and the base arrives
        // after `m` deltas were offered.
        let s = start_at.index(b + 1);
        let m = s + load_at.index(n - s + 1);

        let mut merger = Merger::new(Arc::new(spec(strategy, ranges)));
        let request = merger.fetch_request().unwrap();
        let mut live_applied = 0;
        let mut replayed_applied = 0;
        for i in s..n {
            if i == m {
                let done = merger.load_base(request.epoch, body.as_bytes()).unwrap();
                prop_assert_eq!(done.resnapshot, None);
                replayed_applied = done.replayed.applied;
            }
            let mut offer = |j: usize| {
                let delta = &deltas[j];
                merger.offer(&Input::new(delta.event, delta.data.as_bytes()))
            };
            let outcome = offer(i);
            prop_assert!(!matches!(outcome, Outcome::Malformed(_) | Outcome::Resnapshot(_)), "{:?}", outcome);
            if matches!(outcome, Outcome::Applied(_)) {
                live_applied += 1;
            }
            if let Some(Some(j)) = repeats.get(i) {
                let again = offer(s + j.index(i - s + 1));
                prop_assert!(
                    matches!(again, Outcome::Buffered | Outcome::Stale | Outcome::Duplicate),
                    "{:?}", again
                );
            }
        }
        if m == n {
            let done = merger.load_base(request.epoch, body.as_bytes()).unwrap();
            prop_assert_eq!(done.resnapshot, None);
            replayed_applied = done.replayed.applied;
        }

        prop_assert!(merger.is_synced());
        prop_assert_eq!(merger.buffered(), 0);
        let state: BTreeMap<String, Value> = merger
            .entities()
            .map(|(key, value)| (key.to_owned(), value.to_value()))
            .collect();
        prop_assert_eq!(state, truth(strategy, &deltas));
        let last = deltas.last().map_or(version, |d| d.last.max(version));
        prop_assert_eq!(merger.version(), Some(last));
        // Each delta the base lacked applied exactly once.
        prop_assert_eq!(replayed_applied + live_applied, (n - b) as u64);
        prop_assert_eq!(merger.change_seq(), 1 + live_applied);
    }
}
