//! `sluice dead-letters list|show|replay` against dead letters the real aggregator wrote: the
//! simulator sends a malformed delta, the worker publishes it, the aggregator dead-letters it;
//! the command lists it, shows it in full, and replays it (corrected) to the partition it came
//! from with its original headers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::{Rig, read_topic_until};
use serde_json::Value;
use sluice_sim::SimConfig;
use tokio::process::Command;

fn aggregate_yaml(base_url: &str) -> String {
    format!(
        "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n    version: /version\n\
         \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n"
    )
}

/// Runs `sluice dead-letters --config <config> <args>`; returns (success, stdout, stderr).
async fn dead_letters(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--log")
        .arg("warn")
        .arg("dead-letters")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .expect("run sluice dead-letters");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_to_their_source() {
    let rig = Rig::new("dead-letters").await;
    let sim = rig::sim_with(SimConfig {
        entities: 5,
        rate: 200.0,
        max_events: Some(20_000),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    // The fault in the stream URL (a queued fault would go to the first request, which is the
    // aggregator's base-state fetch).
    rig.target(
        "prices",
        &format!("{}?malformed_after_events=20", sim.stream_url()),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let aggregator = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;
    let dead = read_topic_until(&rig.kafka, &rig.dead_letter, |r| !r.is_empty()).await;
    let config = rig.dir.join(
        std::fs::read_dir(&rig.dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| name.starts_with("aggregator-") && name.ends_with(".yaml"))
            .expect("the aggregator's config file"),
    );

    let (ok, out, err) = dead_letters(&config, &["list"]).await;
    assert!(ok, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), dead.len(), "{out}");
    let first = &lines[0];
    let at = format!("{}/{}", dead[0].partition, dead[0].offset);
    assert_eq!(first["at"], at.as_str());
    assert_eq!(first["target"], "prices");
    assert!(first["error"].as_str().unwrap().contains("json"), "{first}");
    assert_eq!(first["source"], dead[0].header("sluice.source"));

    let (ok, out, err) = dead_letters(&config, &["show", &at]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(shown["payload"], dead[0].value.as_str());
    assert_eq!(shown["headers"]["sse.id"], dead[0].header("sse.id"));

    let (ok, _, err) = dead_letters(&config, &["show", "0/999999"]).await;
    assert!(!ok);
    assert!(err.contains("no dead letter at 0/999999"), "{err}");

    // Replay with a corrected payload: back to the source partition, original headers kept.
    let fixed = rig.dir.join("fixed.json");
    std::fs::write(&fixed, r#"{"key":"k-fixed","version":1,"price":1}"#).unwrap();
    let (ok, out, err) = dead_letters(
        &config,
        &["replay", &at, "--payload-file", fixed.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{err}");
    let replayed: Value = serde_json::from_str(out.trim()).unwrap();
    let source = dead[0].header("sluice.source").to_owned();
    let (source_topic, rest) = source.split_once('/').unwrap();
    let source_partition: i32 = rest.split_once('/').unwrap().0.parse().unwrap();
    let records = read_topic_until(&rig.kafka, source_topic, |records| {
        records
            .iter()
            .any(|r| r.header("sluice.replayed-from").ends_with(&at))
    })
    .await;
    let record = records
        .iter()
        .find(|r| r.header("sluice.replayed-from").ends_with(&at))
        .unwrap();
    assert_eq!(record.value, r#"{"key":"k-fixed","version":1,"price":1}"#);
    assert_eq!(record.partition, source_partition);
    assert_eq!(record.header("sse.id"), dead[0].header("sse.id"));
    assert_eq!(record.header("sluice.target"), "prices");
    assert_eq!(record.header("sluice.error"), "");
    assert!(
        replayed["to"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{source_topic}/{source_partition}/")),
        "{replayed}"
    );
    drop((worker, aggregator));
}
