//! The Python implementation of `sluice-bench pipeline` runs end to end: the harness creates
//! its virtualenv (from PyPI, once), starts the scraper against a simulator and counts every
//! event acknowledged by Kafka (the librdkafka mock cluster the harness starts). Skipped
//! without `python3` (a failure under `SLUICE_TEST_STRICT=1`).

use std::path::PathBuf;
use std::process::Command;

use sluice_testkit::skip_or_fail;

#[test]
fn the_python_scraper_delivers_every_event_of_a_pipeline_run() {
    let test = "the_python_scraper_delivers_every_event_of_a_pipeline_run";
    if sluice_testkit::skip::find_program("python3").is_none() {
        skip_or_fail(
            test,
            "python3 is not installed (Debian packages python3, python3-venv)",
        );
        return;
    }
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"));
    let output = Command::new(&harness)
        .args([
            "pipeline",
            "--impls",
            "python",
            "--events",
            "3000",
            "--kafka",
            "mock",
            "--timeout",
            "60s",
        ])
        .output()
        .expect("run sluice-bench pipeline");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("python"))
        .unwrap_or_else(|| panic!("no python row:\n{stdout}\n{stderr}"));
    assert!(
        row.contains("3,000") && !row.contains("incomplete"),
        "every event acknowledged: {row}\n{stdout}"
    );
}
