//! Dataset deliveries through the real binary on the rig's Kafka: JSON Lines, CSV and Parquet
//! (read with the parquet crate) files read back and compared with `/state` at the manifest's version, every manifest's checksum, size
//! and row count matching its file, no temporary file left, retention keeping the newest
//! `keep`, a target that never syncs skipped and counted, and a directory that cannot be
//! written failing (counted after its retries) while merging and the other deliveries go on.
//! The CSV entry runs on a cron schedule (every second, seconds first), the others on intervals.
//! The S3 path runs against moto's S3-compatible server (PyPI) on loopback: Parquet objects
//! read back, retention, credentials by file reference kept out of the log, and a bucket that
//! does not exist yet failing (counted, on the page and in `/v1/targets`) until it is created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rig::{Rig, Worker};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_testkit::TestKafka;
use tokio::net::TcpListener;

const TARGET: &str = "t";
/// A target whose base state cannot be fetched: never synced.
const UNSYNCED: &str = "u";
const DELTAS: u64 = 60;
const KEYS: u64 = 12;
const JSONL_KEEP: usize = 2;
const CSV_KEEP: usize = 3;
const PARQUET_KEEP: usize = 2;

fn series(result: &str, target: &str) -> String {
    format!("sluice_aggregator_deliveries_total{{result=\"{result}\",target=\"{target}\"}}")
}

/// Delta `v`: entity `k{v % KEYS}` with fields a CSV must quote and a nested one.
fn delta(v: u64) -> Value {
    let mut entity = json!({
        "key": format!("k{:02}", v % KEYS),
        "version": v,
        "name": format!("a, \"quoted\" {v}"),
        "nested": {"list": [v, null], "s": "x"},
    });
    if v % 3 == 0 {
        entity["only_some"] = json!(true);
    }
    entity
}

async fn rig() -> Rig {
    let rig = Rig::with_kafka("deliveries", TestKafka::start().expect("test kafka")).await;
    let base = Router::new().route("/base", get(|| async { r#"{"version":0,"items":[]}"# }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/base", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, base).await });
    let aggregate = |url: &str| {
        format!(
            "aggregate:\n  base:\n    url: {url}\n    items: /items\n    key: /key\n    version: /version\n\
             \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n"
        )
    };
    rig.target(TARGET, "http://127.0.0.1:9/stream", &aggregate(&base_url));
    // Nothing listens on port 9: the base fetch fails and is retried, the state never loads.
    rig.target(
        UNSYNCED,
        "http://127.0.0.1:9/stream",
        &aggregate("http://127.0.0.1:9/base"),
    );
    rig
}

/// The delivery files in `dir`: manifests by stem, data files by stem, and any other name.
struct Listing {
    manifests: BTreeMap<String, Value>,
    data: BTreeMap<String, Vec<u8>>,
    other: Vec<String>,
}

fn list(dir: &Path) -> Listing {
    let mut listing = Listing {
        manifests: BTreeMap::new(),
        data: BTreeMap::new(),
        other: Vec::new(),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return listing;
    };
    // While the aggregator runs, retention may delete a file between the directory read and
    // the file's own read: such a file is gone from this listing, as from the directory.
    let read = |path: &Path| match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    for entry in entries {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let path = dir.join(&name);
        if let Some(stem) = name.strip_suffix(".manifest.json") {
            let Some(bytes) = read(&path) else { continue };
            // A manifest is complete whenever it is visible under its name.
            let manifest: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("manifest {name} is not whole JSON: {e}"));
            listing.manifests.insert(stem.to_owned(), manifest);
        } else if let Some(stem) = name
            .strip_suffix(".jsonl")
            .or_else(|| name.strip_suffix(".csv"))
            .or_else(|| name.strip_suffix(".parquet"))
        {
            let Some(bytes) = read(&path) else { continue };
            listing.data.insert(stem.to_owned(), bytes);
        } else {
            listing.other.push(name);
        }
    }
    listing
}

/// Every manifest names a data file next to it whose bytes, checksum and rows it describes.
fn assert_manifests_match(dir: &Path, listing: &Listing, format: &str) {
    for (stem, manifest) in &listing.manifests {
        let file = manifest["file"].as_str().unwrap();
        assert_eq!(file, format!("{stem}.{format}"), "{}", dir.display());
        let bytes = std::fs::read(dir.join(file))
            .unwrap_or_else(|e| panic!("manifest {stem} without its data file: {e}"));
        assert_eq!(manifest["bytes"], json!(bytes.len()), "{stem}");
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(manifest["sha256"], json!(sha), "{stem}: checksum");
        assert_eq!(manifest["format"], json!(format));
        assert_eq!(manifest["target"], json!(TARGET));
        // No value of this test's entities holds a line break; a CSV has its header line.
        if format != "parquet" {
            let lines = bytes.iter().filter(|b| **b == b'\n').count();
            let rows = if format == "csv" { lines - 1 } else { lines };
            assert_eq!(manifest["rows"], json!(rows), "{stem}: rows");
        }
    }
}

/// The column of an entity's field (its own `key` is `_key`).
fn column(field: &str) -> &str {
    if field == "key" { "_key" } else { field }
}

/// The Parquet file read with the `parquet` crate: `key`, then one typed column per field,
/// each row equal to the state's entity (strings as they are, nested values as JSON text).
fn assert_parquet_is(bytes: &[u8], state: &BTreeMap<String, Value>) {
    use arrow_array::{Array, BooleanArray, Int64Array, StringArray};
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.to_vec()))
        .unwrap()
        .build()
        .unwrap();
    let mut got: BTreeMap<String, Value> = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(schema.field(0).name(), "key");
        for row in 0..batch.num_rows() {
            let mut entity = serde_json::Map::new();
            for (i, field) in schema.fields().iter().enumerate().skip(1) {
                let array = batch.column(i);
                if array.is_null(row) {
                    continue;
                }
                let name = if field.name() == "_key" {
                    "key"
                } else {
                    field.name()
                };
                let value = if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
                    json!(a.value(row))
                } else if let Some(a) = array.as_any().downcast_ref::<BooleanArray>() {
                    json!(a.value(row))
                } else {
                    let text = array
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .value(row);
                    // Nested values are JSON text; strings are themselves.
                    match &state[keys.value(row)][name] {
                        Value::String(_) => json!(text),
                        _ => serde_json::from_str(text).unwrap(),
                    }
                };
                entity.insert(name.to_owned(), value);
            }
            got.insert(keys.value(row).to_owned(), Value::Object(entity));
        }
    }
    assert_eq!(&got, state);
}

fn jsonl_entities(bytes: &[u8]) -> BTreeMap<String, Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            (
                line["key"].as_str().unwrap().to_owned(),
                line["value"].clone(),
            )
        })
        .collect()
}

/// The CSV read with the `csv` crate: header `key` then the sorted union of fields, and each
/// row as the cells the README promises for the state's entities.
fn assert_csv_is(bytes: &[u8], state: &BTreeMap<String, Value>) {
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let fields: BTreeSet<String> = state
        .values()
        .flat_map(|e| e.as_object().unwrap().keys().cloned())
        .collect();
    let mut expected_header = vec!["key".to_owned()];
    expected_header.extend(fields.iter().map(|f| column(f).to_owned()));
    assert_eq!(header, expected_header);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let expected: Vec<Vec<String>> = state
        .iter()
        .map(|(key, entity)| {
            let mut row = vec![key.clone()];
            for field in &fields {
                row.push(match entity.get(field) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                });
            }
            row
        })
        .collect();
    assert_eq!(rows, expected);
}

/// Waits for target `t` to sync, produces the [`DELTAS`] deltas and waits until they are
/// applied; returns its `/state` answer and its entities.
async fn merge_deltas(rig: &Rig, aggregator: &Worker) -> (Value, BTreeMap<String, Value>) {
    aggregator
        .wait_for("target t synced", async |a: &Worker| {
            a.metric("sluice_aggregator_synced{target=\"t\"}").await == 1.0
        })
        .await;
    let records = (1..=DELTAS).map(|v| {
        (
            rig::delta_headers(TARGET, &v.to_string()),
            delta(v).to_string(),
        )
    });
    rig::produce_all(&rig.kafka, &rig.events, 0, TARGET, records).await;
    aggregator
        .wait_for("every delta applied", async |a: &Worker| {
            a.metric("sluice_aggregator_deltas_total{outcome=\"applied\",target=\"t\"}")
                .await
                >= DELTAS as f64
        })
        .await;
    let (code, body) = aggregator.get("/v1/targets/t/state").await.unwrap();
    assert_eq!(code, 200);
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["version"], json!(DELTAS));
    let entities: BTreeMap<String, Value> =
        serde_json::from_value(state["entities"].clone()).unwrap();
    assert_eq!(entities.len(), KEYS as usize);
    (state, entities)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_whole_versions_of_the_state_kept_to_their_retention() {
    let rig = rig().await;
    // A regular file where the failing entry's target directory must go.
    let blocked = rig.dir.join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join(TARGET), "not a directory").unwrap();
    // `all`: the per-target delivery families are not in `essential`.
    let extra = format!(
        "metrics:\n  per_target: all\n\
         deliveries:\n\
         \x20 - targets: all\n    every: 700ms\n    destination: {{ dir: out-jsonl }}\n    keep: {JSONL_KEEP}\n\
         \x20 - targets: [{TARGET}]\n    cron: \"* * * * * *\"\n    format: csv\n    destination: {{ dir: out-csv }}\n    keep: {CSV_KEEP}\n\
         \x20 - targets: [{TARGET}]\n    every: 800ms\n    format: parquet\n    destination: {{ dir: out-parquet }}\n    keep: {PARQUET_KEEP}\n\
         \x20 - targets: [{TARGET}]\n    every: 1s\n    destination: {{ dir: blocked }}\n    keep: 1\n\
         \x20 - targets: [{TARGET}]\n    every: 600ms\n    format: parquet\n    destination: {{ dir: out-columns }}\n    keep: 1\n\
         \x20   columns:\n\
         \x20     - {{ name: name, pointer: /name }}\n\
         \x20     - {{ name: first, pointer: /nested/list/0, type: int64 }}\n\
         \x20     - {{ name: flag, pointer: /only_some, type: boolean }}\n\
         \x20     - {{ name: wrong, pointer: /name, type: int64 }}\n"
    );
    let aggregator = rig.start_aggregator(&extra, false).await;
    let (state, entities) = merge_deltas(&rig, &aggregator).await;

    // Watch the directories until each saw more than `keep` deliveries and at least one of
    // the final state, then a failed one is counted for the blocked directory.
    let jsonl_dir = rig.dir.join("out-jsonl").join(TARGET);
    let csv_dir = rig.dir.join("out-csv").join(TARGET);
    let parquet_dir = rig.dir.join("out-parquet").join(TARGET);
    let columns_dir = rig.dir.join("out-columns").join(TARGET);
    let mut seen: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let final_seq = state["change_seq"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for (dir, keep) in [
            (&jsonl_dir, JSONL_KEEP),
            (&csv_dir, CSV_KEEP),
            (&parquet_dir, PARQUET_KEEP),
        ] {
            let listing = list(dir);
            // Retention runs right after a delivery's manifest lands: one more meanwhile.
            assert!(
                listing.manifests.len() <= keep + 1,
                "{} holds more than keep + 1: {:?}",
                dir.display(),
                listing.manifests.keys()
            );
            let seen = seen.entry(dir.clone()).or_default();
            seen.extend(listing.manifests.keys().cloned());
            let of_final = listing
                .manifests
                .values()
                .any(|m| m["change_seq"] == final_seq);
            done &= seen.len() > keep && of_final;
        }
        done &= list(&columns_dir)
            .manifests
            .values()
            .any(|m| m["change_seq"] == final_seq);
        done &= aggregator.metric(&series("failed", TARGET)).await >= 1.0;
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not happen: seen {seen:?}\n{}",
            aggregator.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let skipped = aggregator
        .metric(&series("skipped_not_synced", UNSYNCED))
        .await;
    assert!(skipped >= 1.0, "the unsynced target's skips are counted");
    assert_eq!(aggregator.metric(&series("ok", UNSYNCED)).await, 0.0);
    assert!(aggregator.metric(&series("ok", TARGET)).await >= 6.0);
    assert!(
        aggregator
            .metric("sluice_aggregator_delivery_bytes_total")
            .await
            > 0.0
    );
    let last = aggregator
        .metric("sluice_aggregator_delivery_last_success_timestamp_seconds{target=\"t\"}")
        .await;
    assert!(last > 1.7e9, "last success is a Unix time: {last}");

    // Stopped, so no write is in flight: what is left is exactly the kept deliveries.
    let (status, log) = aggregator.terminate().await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("delivery failed; retrying"),
        "the blocked directory is retried"
    );
    assert!(
        !rig.dir.join("out-jsonl").join(UNSYNCED).exists(),
        "nothing is delivered for a target that never synced"
    );
    for (dir, keep, format) in [
        (&jsonl_dir, JSONL_KEEP, "jsonl"),
        (&csv_dir, CSV_KEEP, "csv"),
        (&parquet_dir, PARQUET_KEEP, "parquet"),
    ] {
        let listing = list(dir);
        assert!(
            listing.other.is_empty(),
            "temporary or stray files: {:?}",
            listing.other
        );
        assert_eq!(listing.manifests.len(), keep, "{}", dir.display());
        let stems: Vec<&String> = listing.manifests.keys().collect();
        assert_eq!(
            listing.data.keys().collect::<Vec<_>>(),
            stems,
            "data and manifest pairs"
        );
        // Deliveries went on between the last look and the stop.
        let seen = seen.get_mut(dir).unwrap();
        seen.extend(listing.manifests.keys().cloned());
        let newest_seen: Vec<&String> = seen.iter().rev().take(keep).rev().collect();
        assert_eq!(stems, newest_seen, "retention keeps the newest");
        assert_manifests_match(dir, &listing, format);

        let (stem, manifest) = listing
            .manifests
            .iter()
            .rfind(|(_, m)| m["change_seq"] == final_seq)
            .expect("a delivery of the final state");
        assert_eq!(manifest["version"], state["version"]);
        assert_eq!(manifest["kafka"], state["kafka"]);
        assert_eq!(manifest["rows"], json!(KEYS));
        let data = &listing.data[stem];
        match format {
            "jsonl" => assert_eq!(jsonl_entities(data), entities),
            "csv" => assert_csv_is(data, &entities),
            _ => assert_parquet_is(data, &entities),
        }
    }
    assert_configured_columns(&columns_dir, &final_seq, &entities);
}

/// A reader of the S3 server's bucket, as a client of the deliveries is (object_store with any
/// credentials: moto accepts them), not the aggregator's own.
struct BucketReader(object_store::aws::AmazonS3);

impl BucketReader {
    fn new(endpoint: &str, bucket: &str) -> BucketReader {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("reader")
            .with_secret_access_key("reader")
            .build()
            .unwrap();
        BucketReader(store)
    }

    /// The object names under `prefix`.
    async fn list(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let prefix = object_store::path::Path::from(prefix);
        let mut names: Vec<String> = self
            .0
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap_or_default();
        names.sort();
        names
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(key);
        let object = self
            .0
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        object.bytes().await.unwrap().to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_to_an_s3_bucket_whole_kept_to_their_retention_and_a_missing_bucket_is_retried()
 {
    let test = "deliveries_go_to_an_s3_bucket_whole_kept_to_their_retention_and_a_missing_bucket_is_retried";
    if sluice_testkit::skip::find_program("python3").is_none() {
        sluice_testkit::skip_or_fail(
            test,
            "python3 is not installed (Debian packages python3, python3-venv)",
        );
        return;
    }
    let s3 = tokio::task::spawn_blocking(sluice_testkit::s3::S3Server::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start the S3 server: {e}"));
    let endpoint = s3.endpoint();
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{endpoint}/sluice-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "bucket created");

    let rig = rig().await;
    // Credentials as secret files; neither value may reach the log.
    const KEY_ID: &str = "AKIDSLUICETEST0001";
    const SECRET: &str = "s3cr3t-never-in-a-log-0b7d1f";
    std::fs::write(rig.dir.join("s3-key-id"), KEY_ID).unwrap();
    std::fs::write(rig.dir.join("s3-secret"), format!("{SECRET}\n")).unwrap();
    let s3_entry = |bucket: &str, format: &str, every: &str, keep: usize| {
        format!(
            "\x20 - targets: [{TARGET}]\n    every: {every}\n    format: {format}\n    keep: {keep}\n    destination:\n      s3:\n        bucket: {bucket}\n        prefix: deliveries/daily\n        endpoint: {endpoint}\n        access_key_id: {{ file: s3-key-id }}\n        secret_access_key: {{ file: s3-secret }}\n"
        )
    };
    let extra = format!(
        "metrics:\n  per_target: all\ndeliveries:\n{}{}",
        s3_entry("sluice-out", "parquet", "700ms", PARQUET_KEEP),
        s3_entry("created-later", "jsonl", "500ms", 1),
    );
    let aggregator = rig.start_aggregator(&extra, false).await;
    let (state, entities) = merge_deltas(&rig, &aggregator).await;
    let final_seq = state["change_seq"].clone();

    // The bucket that does not exist yet: its deliveries fail after their retries, are counted
    // and shown, and merging goes on (every delta above was applied meanwhile).
    aggregator
        .wait_for("a failed delivery counted", async |a: &Worker| {
            a.metric(&series("failed", TARGET)).await >= 1.0
        })
        .await;
    let (_, page) = aggregator.get("/").await.unwrap();
    assert!(
        page.contains("s3://created-later/deliveries/daily/") && page.contains("failed"),
        "the page shows the failing destination: {page}"
    );
    let (_, listing) = aggregator.get("/v1/targets").await.unwrap();
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let shown = listing["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == TARGET)
        .unwrap()["deliveries"]
        .clone();
    let failing = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["destination"]
                .as_str()
                .unwrap()
                .starts_with("s3://created-later/")
        })
        .unwrap();
    assert_eq!(failing["result"], "failed", "{shown}");
    assert!(
        failing["error"].as_str().unwrap().contains("created-later"),
        "{shown}"
    );
    // The page for docs/ when asked (SLUICE_DELIVERY_SCREENSHOT=docs): one destination
    // delivering, one failing.
    if let Ok(dir) = std::env::var("SLUICE_DELIVERY_SCREENSHOT") {
        let program = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(sluice_testkit::skip::find_program)
            .expect("chromium for the screenshot");
        let path = Path::new(&dir).join("aggregator-deliveries.png");
        let status = std::process::Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1400,460",
            ])
            .arg(format!(
                "--user-data-dir={}",
                rig.dir.join("chromium").display()
            ))
            .arg(format!("--screenshot={}", path.display()))
            .arg(format!("{}/", aggregator.base()))
            .status()
            .expect("chromium screenshot");
        assert!(status.success(), "screenshot: {status}");
    }
    // Once the bucket exists, the next round delivers.
    let created = http
        .put(format!("{endpoint}/created-later"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let later = BucketReader::new(&endpoint, "created-later");
    while !later
        .list("deliveries/daily/t")
        .await
        .iter()
        .any(|k| k.ends_with(".manifest.json"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the bucket was created\n{}",
            aggregator.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The good bucket: more than `keep` deliveries over time, one of the final state.
    let out = BucketReader::new(&endpoint, "sluice-out");
    let prefix = "deliveries/daily/t/";
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let keys = out.list(prefix).await;
        let manifests: Vec<&String> = keys
            .iter()
            .filter(|k| k.ends_with(".manifest.json"))
            .collect();
        assert!(manifests.len() <= PARQUET_KEEP + 1, "retention: {keys:?}");
        seen.extend(manifests.iter().map(|k| (*k).clone()));
        let mut of_final = false;
        for key in &manifests {
            let manifest: Value = serde_json::from_slice(&out.get(key).await)
                .unwrap_or_else(|e| panic!("{key} is not whole JSON: {e}"));
            of_final |= manifest["change_seq"] == final_seq;
        }
        if seen.len() > PARQUET_KEEP && of_final {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not happen: {seen:?}\n{}",
            aggregator.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, log) = aggregator.terminate().await;
    assert!(status.success(), "{log}");
    for secret in [KEY_ID, SECRET] {
        assert!(
            !log.contains(secret),
            "a credential in the aggregator's log"
        );
    }
    // Stopped: exactly the kept deliveries, each a data object and its manifest.
    let keys = out.list(prefix).await;
    let manifests: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .collect();
    assert_eq!(manifests.len(), PARQUET_KEEP, "{keys:?}");
    assert_eq!(
        keys.len(),
        2 * PARQUET_KEEP,
        "data and manifest pairs: {keys:?}"
    );
    let newest: Vec<&String> = seen.iter().rev().take(PARQUET_KEEP).rev().collect();
    assert_eq!(manifests, newest, "retention keeps the newest");
    let mut final_checked = false;
    for key in manifests {
        let manifest: Value = serde_json::from_slice(&out.get(key).await).unwrap();
        let data_key = format!("{prefix}{}", manifest["file"].as_str().unwrap());
        let data = out.get(&data_key).await;
        assert_eq!(manifest["bytes"], json!(data.len()));
        let sha: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(manifest["sha256"], json!(sha), "{key}: checksum");
        if manifest["change_seq"] == final_seq {
            assert_eq!(manifest["rows"], json!(KEYS));
            assert_parquet_is(&data, &entities);
            final_checked = true;
        }
    }
    assert!(final_checked, "a kept delivery of the final state");
    drop(s3);
}

/// The delivery with configured columns: exactly `key` and those columns, typed as configured,
/// each the entity's value at its pointer; the `wrong` column (a string pointer typed int64) is
/// all null and each of its cells counted as mismatched.
fn assert_configured_columns(dir: &Path, final_seq: &Value, state: &BTreeMap<String, Value>) {
    use arrow_array::{Array, BooleanArray, Int64Array, StringArray};
    let listing = list(dir);
    assert_manifests_match(dir, &listing, "parquet");
    let (stem, manifest) = listing
        .manifests
        .iter()
        .rfind(|(_, m)| &m["change_seq"] == final_seq)
        .expect("a delivery of the final state with configured columns");
    assert_eq!(manifest["mismatched"], json!(KEYS), "every `wrong` cell");
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(listing.data[stem].clone()))
            .unwrap()
            .build()
            .unwrap();
    let mut rows = 0;
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let names: Vec<(&str, String)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("key", "Utf8".to_owned()),
                ("name", "Utf8".to_owned()),
                ("first", "Int64".to_owned()),
                ("flag", "Boolean".to_owned()),
                ("wrong", "Int64".to_owned()),
            ]
        );
        let column = |i: usize| batch.column(i).clone();
        let (keys, name, first, flag, wrong) =
            (column(0), column(1), column(2), column(3), column(4));
        let keys = keys.as_any().downcast_ref::<StringArray>().unwrap();
        let name = name.as_any().downcast_ref::<StringArray>().unwrap();
        let first = first.as_any().downcast_ref::<Int64Array>().unwrap();
        let flag = flag.as_any().downcast_ref::<BooleanArray>().unwrap();
        for row in 0..batch.num_rows() {
            let entity = &state[keys.value(row)];
            assert_eq!(json!(name.value(row)), entity["name"]);
            assert_eq!(json!(first.value(row)), entity["nested"]["list"][0]);
            match entity.get("only_some") {
                Some(v) => assert_eq!(json!(flag.value(row)), *v),
                None => assert!(flag.is_null(row)),
            }
            assert!(wrong.is_null(row));
            rows += 1;
        }
    }
    assert_eq!(rows, state.len());
}
