//! `sluice validate`: the shipped examples pass, and broken config is reported problem by problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validate(config: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(repo())
        .args(["validate", "--config", config])
        .env_remove("SLUICE_CONFIG")
        .output()
        .expect("sluice validate runs")
}

#[test]
fn the_shipped_example_config_is_valid() {
    let output = validate("config/worker.yaml");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("ok: 2 targets"), "{stdout}");
}

#[test]
fn every_problem_is_reported_with_file_and_field_and_a_failing_status() {
    let output =
        validate("crates/sluice-config/tests/fixtures/invalid/several_problems/worker.yaml");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 5, "{stderr}");
    assert!(
        stderr.contains("targets/b.yaml: proxy.pool: unknown proxy pool \"eu\""),
        "{stderr}"
    );
    assert!(stderr.contains("worker.yaml: kafka.brokers:"), "{stderr}");
}

#[test]
fn a_bad_metrics_mode_is_refused_naming_file_and_field() {
    let output =
        validate("crates/sluice-config/tests/fixtures/invalid/bad_metrics_per_target/worker.yaml");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "bad_metrics_per_target/worker.yaml: metrics.per_target: bad metrics mode \"Essential\": use all, essential or none"
        ),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let output = validate("config/does-not-exist.yaml");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does-not-exist.yaml"), "{stderr}");
}

#[test]
fn the_shipped_aggregator_config_is_valid() {
    let output = validate("config/aggregator.yaml");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "ok: aggregator, 1 of 2 targets aggregated");
}

/// Every `aggregate_*` / `aggregator_*` fixture of sluice-config, through the command line: the
/// fixture's `aggregator.yaml` when it has one (recognised by its `worker` key), else its
/// `worker.yaml`; stderr must be exactly its `expected.txt` and the status 1.
#[test]
fn every_invalid_aggregate_fixture_is_reported_with_its_expected_messages() {
    let fixtures = repo().join("crates/sluice-config/tests/fixtures/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&fixtures).expect("fixtures dir exists") {
        let dir = entry.expect("readable entry").path();
        let rule = dir.file_name().unwrap().to_string_lossy().into_owned();
        // Without a `worker` key a file is a worker config (this one even a valid one), so this
        // fixture is only checked through `load_aggregator`, in sluice-config's tests.
        if !rule.starts_with("aggregat") || rule == "aggregator_missing_worker" {
            continue;
        }
        let file = if dir.join("aggregator.yaml").exists() {
            dir.join("aggregator.yaml")
        } else {
            dir.join("worker.yaml")
        };
        let output = validate(file.to_str().unwrap());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{rule}: {stderr}");
        let got = stderr.replace(&format!("{}/", dir.display()), "");
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        assert_eq!(got, expected, "fixture {rule}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} aggregate fixtures");
}
