//! Consistent reads of the aggregator's state through real HTTP: paging with a cursor that pins
//! one version while records keep arriving, the version's expiry, `fields` projection, the
//! version headers, `ETag` / `If-None-Match`, `min_version` / `min_seq` waits and their 504, and
//! bad parameters. The real binary on the rig's Kafka (the broker in `SLUICE_TEST_KAFKA`, else
//! the mock cluster); deltas written to the events topic as a worker writes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use rig::{Rig, Worker};
use serde_json::{Value, json};

const TARGET: &str = "t";
const APPLIED: &str = "sluice_aggregator_deltas_total{outcome=\"applied\",target=\"t\"}";
/// Entities of the target: delta `v` sets entity `k{(v - 1) % KEYS}` to `{"key", "n": v}`.
const KEYS: u64 = 1000;

/// The rig: one `replace` target with an empty base state, no upstream.
async fn rig(name: &str) -> Rig {
    Rig::with_empty_base_target(name, TARGET).await
}

fn key(v: u64) -> String {
    format!("k{:04}", (v - 1) % KEYS)
}

/// Writes the deltas `versions` and waits until Kafka acknowledged them and the aggregator
/// applied them.
async fn produce(rig: &Rig, aggregator: &Worker, versions: RangeInclusive<u64>) {
    let last = *versions.end();
    let records = versions.map(|v| {
        let data = json!({"key": key(v), "version": v, "n": v}).to_string();
        (rig::delta_headers(TARGET, &v.to_string()), data)
    });
    rig::produce_all(&rig.kafka, &rig.events, 0, TARGET, records).await;
    aggregator
        .wait_for(&format!("{last} deltas applied"), async |a: &Worker| {
            a.metric(APPLIED).await >= last as f64
        })
        .await;
}

/// The state after deltas `1..=v` (`v` ≥ [`KEYS`]): every entity at its last delta.
fn state_at(v: u64) -> BTreeMap<String, Value> {
    (v - KEYS + 1..=v)
        .map(|v| (key(v), json!({"key": key(v), "version": v, "n": v})))
        .collect()
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }
}

async fn get_with(aggregator: &Worker, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = reqwest::Client::new().get(format!("{}{path}", aggregator.base()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the aggregator answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
    };
    Got {
        status,
        headers,
        body,
    }
}

async fn fetch(aggregator: &Worker, path: &str) -> Got {
    get_with(aggregator, path, &[]).await
}

fn entities_path(query: &str) -> String {
    format!("/v1/targets/{TARGET}/entities?{query}")
}

/// A page's entities as `(key, value)`.
fn page_entities(page: &Got) -> Vec<(String, Value)> {
    page.body["entities"]
        .as_array()
        .unwrap_or_else(|| panic!("entities array: {}", page.body))
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_owned(), e["value"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_with_a_cursor_reads_one_version_while_records_keep_arriving_until_it_expires() {
    let rig = rig("agg-reads-pages").await;
    let aggregator = rig.start_aggregator("", true).await;
    produce(&rig, &aggregator, 1..=KEYS).await;

    // The first page: the version it came from, in the headers and the body.
    let first = fetch(&aggregator, &entities_path("limit=70")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("sluice-version"), KEYS.to_string());
    assert_eq!(first.body["version"], KEYS);
    let seq = first.body["change_seq"].as_u64().unwrap();
    assert_eq!(first.header("sluice-change-seq"), seq.to_string());
    assert_eq!(first.header("sluice-kafka-partition"), "0");
    assert_eq!(
        first.header("sluice-kafka-next-offset"),
        first.body["kafka"]["next_offset"].to_string()
    );

    // Paging on while every entity changes (twice) between pages: each page is of the first
    // page's version, and the walk is exactly the state at it.
    let mut walked = page_entities(&first);
    let mut cursor = first.body["next"].as_str().expect("a cursor").to_owned();
    let mut produced = KEYS;
    let mut pages = 1;
    loop {
        if pages % 5 == 1 {
            produce(&rig, &aggregator, produced + 1..=produced + 2 * KEYS).await;
            produced += 2 * KEYS;
        }
        let page = fetch(
            &aggregator,
            &entities_path(&format!("limit=70&cursor={cursor}")),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(
            page.body["version"], KEYS,
            "page {pages} is of the walk's version"
        );
        assert_eq!(page.body["change_seq"], seq);
        assert_eq!(page.header("etag"), first.header("etag"));
        walked.extend(page_entities(&page));
        pages += 1;
        match page.body["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, KEYS.div_ceil(70));
    let expected: Vec<(String, Value)> = state_at(KEYS).into_iter().collect();
    assert_eq!(walked, expected, "the walk is the state at its version");
    let now = fetch(&aggregator, &format!("/v1/targets/{TARGET}/state")).await;
    assert_eq!(now.body["version"], produced);
    let now: BTreeMap<String, Value> =
        serde_json::from_value(now.body["entities"].clone()).unwrap();
    assert_eq!(now, state_at(produced), "while the state itself moved on");

    // A prefix, and a projection to JSON pointers (one that finds nothing is left out).
    let page = fetch(
        &aggregator,
        &entities_path("prefix=k001&fields=/n,/nothing,/key&limit=1000"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let projected = page_entities(&page);
    let expected: Vec<(String, Value)> = state_at(produced)
        .into_iter()
        .filter(|(k, _)| k.starts_with("k001"))
        .map(|(k, v)| (k, json!({"/n": v["n"], "/key": v["key"]})))
        .collect();
    assert_eq!(projected.len(), 10);
    assert_eq!(projected, expected);
    assert_eq!(
        page.body["next"],
        Value::Null,
        "the last page has no cursor"
    );

    // The walk's version is kept while fewer than 16 newer versions were paged; the 17th
    // newer one makes it expire: 410, naming it.
    let old = fetch(&aggregator, &entities_path("limit=10")).await;
    let old_cursor = old.body["next"].as_str().unwrap().to_owned();
    let mut newest = String::new();
    for i in 1..=16 {
        produce(&rig, &aggregator, produced + 1..=produced + 1).await;
        produced += 1;
        let page = fetch(&aggregator, &entities_path("limit=10")).await;
        assert_eq!(page.body["version"], produced);
        newest = page.body["next"].as_str().unwrap().to_owned();
        let again = fetch(&aggregator, &entities_path(&format!("cursor={old_cursor}"))).await;
        if i < 16 {
            assert_eq!(
                again.status, 200,
                "{} newer versions paged: {}",
                i, again.body
            );
        } else {
            assert_eq!(again.status, 410, "{}", again.body);
            assert_eq!(again.body["code"], "version_expired");
            assert!(
                again.body["error"]
                    .as_str()
                    .unwrap()
                    .contains("start again"),
                "{}",
                again.body
            );
        }
    }
    let page = fetch(&aggregator, &entities_path(&format!("cursor={newest}"))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["version"], produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carry_their_version_answer_304_wait_for_a_version_and_refuse_bad_parameters() {
    let rig = rig("agg-reads-etag").await;
    let aggregator = rig.start_aggregator("", true).await;
    produce(&rig, &aggregator, 1..=20).await;

    // Every read names its version; the same version again is 304.
    let paths = [
        format!("/v1/targets/{TARGET}/state"),
        format!("/v1/targets/{TARGET}/entities/{}", key(20)),
        entities_path("limit=5"),
    ];
    let mut tags = Vec::new();
    for path in &paths {
        let got = fetch(&aggregator, path).await;
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        assert_eq!(got.header("sluice-version"), "20", "{path}");
        let seq = got.header("sluice-change-seq").to_owned();
        let tag = got.header("etag").to_owned();
        assert!(tag.contains(&seq), "{path}: {tag}");
        let again = get_with(&aggregator, path, &[("if-none-match", &tag)]).await;
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(again.header("etag"), tag);
        let other = get_with(&aggregator, path, &[("if-none-match", "\"v1-s1\"")]).await;
        assert_eq!(other.status, 200, "{path}: another tag");
        tags.push(tag);
    }
    let state = fetch(&aggregator, &paths[0]).await;
    assert_eq!(state.body["version"], 20);
    assert_eq!(
        state.body["kafka"]["next_offset"].to_string(),
        state.header("sluice-kafka-next-offset")
    );
    assert_eq!(state.body["entities"][key(20)]["n"], 20);
    assert_eq!(
        fetch(&aggregator, &paths[1]).await.body,
        json!({"key": key(20), "version": 20, "n": 20})
    );

    // A change: the old tag no longer matches.
    produce(&rig, &aggregator, 21..=21).await;
    for (path, tag) in paths.iter().zip(&tags) {
        let got = get_with(&aggregator, path, &[("if-none-match", tag)]).await;
        assert_eq!(got.status, 200, "{path}");
        assert_ne!(got.header("etag"), tag, "{path}");
    }

    // A read waits for the version (or change sequence) it asks for...
    let seq: u64 = fetch(&aggregator, &paths[0])
        .await
        .header("sluice-change-seq")
        .parse()
        .unwrap();
    let waiting = {
        let base = aggregator.base().to_owned();
        tokio::spawn(async move {
            let url = format!("{base}/v1/targets/{TARGET}/state?min_version=30&timeout=25");
            let response = reqwest::get(url).await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let waiting_seq = {
        let base = aggregator.base().to_owned();
        let path = entities_path(&format!("min_seq={}&timeout=25s&limit=1", seq + 9));
        tokio::spawn(async move {
            let response = reqwest::get(format!("{base}{path}")).await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    // (Each is answered only once its state is reached: neither has been yet.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished() && !waiting_seq.is_finished());
    produce(&rig, &aggregator, 22..=29).await;
    assert!(!waiting.is_finished(), "version 29 is not 30");
    produce(&rig, &aggregator, 30..=30).await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["version"].as_u64().unwrap() >= 30, "{body}");
    let (status, body) = waiting_seq.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["change_seq"].as_u64().unwrap() >= seq + 9, "{body}");
    // ...reached already: answered at once.
    let got = fetch(&aggregator, &entities_path("min_version=25&limit=1")).await;
    assert_eq!(got.status, 200);
    // ...and answers 504 when it does not come in time.
    let started = tokio::time::Instant::now();
    let late = fetch(
        &aggregator,
        &format!(
            "/v1/targets/{TARGET}/entities/{}?min_version=1000&timeout=0.5",
            key(1)
        ),
    )
    .await;
    assert_eq!(late.status, 504, "{}", late.body);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(late.body["version"], 30);
    assert_eq!(late.body["min_version"], 1000);

    // Bad parameters: 400 naming the parameter.
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("fields=n", "fields"),
        ("fields=/n,/~2", "fields"),
        ("cursor=zz", "cursor"),
        ("cursor=7b7d", "cursor"),
        ("timeout=31", "timeout"),
        ("timeout=soon&min_seq=1", "timeout"),
        ("min_version=-1", "min_version"),
        ("min_seq=1.5", "min_seq"),
        ("limit=1&limit=2", "limit"),
        ("colour=red", "colour"),
    ] {
        let got = fetch(&aggregator, &entities_path(query)).await;
        assert_eq!(got.status, 400, "{query}: {}", got.body);
        assert_eq!(got.body["parameter"], parameter, "{query}: {}", got.body);
        assert!(
            got.body["error"].as_str().unwrap().contains(parameter),
            "{query}: {}",
            got.body
        );
    }
    let page = fetch(&aggregator, &entities_path("limit=1")).await;
    let cursor = page.body["next"].as_str().unwrap();
    let got = fetch(
        &aggregator,
        &entities_path(&format!("cursor={cursor}&prefix=k")),
    )
    .await;
    assert_eq!(
        (got.status, &got.body["parameter"]),
        (400, &json!("prefix"))
    );
    let got = fetch(&aggregator, &format!("/v1/targets/{TARGET}/state?limit=1")).await;
    assert_eq!((got.status, &got.body["parameter"]), (400, &json!("limit")));
    assert!(
        !aggregator.log().contains("panicked"),
        "{}",
        aggregator.log()
    );
}
