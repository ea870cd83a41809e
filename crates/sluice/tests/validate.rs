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
fn a_missing_config_file_is_named() {
    let output = validate("config/does-not-exist.yaml");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does-not-exist.yaml"), "{stderr}");
}
