//! The aggregator's state of each target against its simulator's truth (`GET /v1/snapshot`):
//! same version, same entity keys, same values. It reads both over HTTP and compares; it must
//! not wait or retry (the caller bounds the wait).

use std::collections::BTreeMap;

use serde_json::Value;

/// How one target's state compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// Equal to the truth.
    Equal,
    /// The aggregator answered no state (status and body).
    NoState(String),
    /// Different: what differs, briefly.
    Differs(String),
}

/// The truth: `GET {base}/v1/snapshot` as version and key -> item.
pub async fn truth(
    client: &reqwest012::Client,
    sim_base: &str,
) -> anyhow::Result<(u64, BTreeMap<String, Value>)> {
    let text = client
        .get(format!("{sim_base}/v1/snapshot"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let body: Value = serde_json::from_str(&text)?;
    let version = body["version"].as_u64().unwrap_or_default();
    let items = body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| Some((i["key"].as_str()?.to_owned(), i.clone())))
                .collect()
        })
        .unwrap_or_default();
    Ok((version, items))
}

/// Compares the aggregator's `GET {base}/v1/targets/{target}/state` with `truth`.
pub async fn compare(
    client: &reqwest012::Client,
    aggregator: &str,
    target: &str,
    truth: &(u64, BTreeMap<String, Value>),
) -> Comparison {
    let response = match client
        .get(format!("{aggregator}/v1/targets/{target}/state"))
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return Comparison::NoState(format!("no answer: {error}")),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Comparison::NoState(format!("{status}: {}", text.trim()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(state) => diff(&state, truth),
        Err(error) => Comparison::Differs(format!("state is not JSON: {error}")),
    }
}

/// Compares a state document (`{version, entities: {key: value}}`) with the truth.
pub fn diff(state: &Value, (version, items): &(u64, BTreeMap<String, Value>)) -> Comparison {
    let got_version = state["version"].as_u64();
    let empty = serde_json::Map::new();
    let entities = state["entities"].as_object().unwrap_or(&empty);
    let mut problems = Vec::new();
    if got_version != Some(*version) {
        problems.push(format!("version {got_version:?}, truth {version}"));
    }
    let missing: Vec<&String> = items
        .keys()
        .filter(|k| !entities.contains_key(*k))
        .collect();
    let extra: Vec<&String> = entities
        .keys()
        .filter(|k| !items.contains_key(*k))
        .collect();
    let different: Vec<&String> = items
        .iter()
        .filter(|(k, v)| entities.get(*k).is_some_and(|got| got != *v))
        .map(|(k, _)| k)
        .collect();
    for (what, keys) in [
        ("missing", missing),
        ("extra", extra),
        ("different", different),
    ] {
        if !keys.is_empty() {
            let shown: Vec<&str> = keys.iter().take(5).map(|k| k.as_str()).collect();
            problems.push(format!("{} {what} ({shown:?}…)", keys.len()));
        }
    }
    if problems.is_empty() {
        Comparison::Equal
    } else {
        Comparison::Differs(problems.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_compare_by_version_keys_and_values() {
        let item = json!({"key": "E1", "price": 1.5, "qty": 2, "version": 7});
        let truth = (7, BTreeMap::from([("E1".to_owned(), item.clone())]));
        let state = json!({"version": 7, "entities": {"E1": item}});
        assert_eq!(diff(&state, &truth), Comparison::Equal);
        let stale = json!({"version": 6, "entities": {"E1": {"key": "E1", "price": 1.0, "qty": 2, "version": 6}, "E2": {}}});
        let Comparison::Differs(what) = diff(&stale, &truth) else {
            panic!("stale state compared equal");
        };
        assert!(what.contains("version Some(6), truth 7"), "{what}");
        assert!(what.contains("1 extra"), "{what}");
        assert!(what.contains("1 different"), "{what}");
    }
}
