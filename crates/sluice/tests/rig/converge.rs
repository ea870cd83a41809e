//! Whether an aggregator holds the simulator's truth: the state it serves of a target against
//! what the simulator says, exactly (same entities, values and version).

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_sim::RunningSim;

use super::Worker;

/// The simulator's truth as the aggregator shows state: key → item, and the version.
pub fn truth(sim: &RunningSim) -> (u64, BTreeMap<String, Value>) {
    let snapshot = sim.snapshot();
    let items = snapshot
        .items
        .iter()
        .map(|i| (i.key.clone(), serde_json::to_value(i).unwrap()))
        .collect();
    (snapshot.version, items)
}

/// The aggregator's state of `target`, when it has one.
pub async fn state_of(aggregator: &Worker, target: &str) -> Option<(u64, BTreeMap<String, Value>)> {
    let (code, body) = aggregator
        .get(&format!("/v1/targets/{target}/state"))
        .await?;
    if code != 200 {
        return None;
    }
    let state: Value = serde_json::from_str(&body).expect("state is json");
    let version = state["version"].as_u64()?;
    let entities = state["entities"]
        .as_object()
        .expect("entities object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some((version, entities))
}

/// Waits until the aggregator's state of `target` reaches the simulator's final version, then
/// asserts it equals the truth exactly.
pub async fn assert_converges(aggregator: &Worker, target: &str, sim: &RunningSim) {
    let (version, items) = truth(sim);
    aggregator
        .wait_for(
            &format!("{target} to reach version {version}"),
            async |a: &Worker| state_of(a, target).await.is_some_and(|(v, _)| v >= version),
        )
        .await;
    let (got_version, got) = state_of(aggregator, target).await.expect("state");
    assert_eq!(got_version, version, "{target}: version");
    let missing: Vec<_> = items.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !items.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{target}: entities differ: missing {missing:?}, extra {extra:?}"
    );
    for (key, value) in &items {
        assert_eq!(&got[key], value, "{target}: entity {key}");
    }
}
