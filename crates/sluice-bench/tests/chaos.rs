//! The short chaos runs of `scripts/test`: `sluice-bench chaos` on the real broker in
//! `SLUICE_TEST_KAFKA`, which must pass its checks (0 lost, every state equal to the
//! simulator's, no secret anywhere). One worker for 60 s (about 65-90 s in all), and a fleet of
//! three for 20 s (pauses beyond the session timeout, a rolling restart, kill -9s; about 30-45
//! s), one after the other. Records per event, the longest unserved time and the longest gap are printed, not
//! checked here (issue 13 items 7 and 13). Without a real broker, or without the `sluice`
//! binary beside this test's `sluice-bench`, they skip (fail under `SLUICE_TEST_STRICT=1`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use sluice_testkit::skip_or_fail;

/// One chaos run at a time: each is a worker fleet, an aggregator and a broker's worth of load
/// on a 2-core CI machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `sluice-bench chaos` with `args` and `--seed seed`; its stdout and summary line, or
/// `None` when skipped.
fn chaos(test: &str, seed: &str, args: &[&str]) -> Option<(String, String)> {
    let Ok(kafka) = std::env::var("SLUICE_TEST_KAFKA") else {
        skip_or_fail(
            test,
            "needs a real broker in SLUICE_TEST_KAFKA (scripts/test starts one)",
        );
        return None;
    };
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"));
    let sluice = harness.with_file_name("sluice");
    if !sluice.exists() {
        skip_or_fail(
            test,
            &format!(
                "{} is not built (cargo build -p sluice, or run the whole workspace's tests)",
                sluice.display()
            ),
        );
        return None;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let output = Command::new(&harness)
        .args(["chaos", "--seed", seed, "--kafka", &kafka])
        .args(args)
        .arg("--sluice-bin")
        .arg(&sluice)
        .output()
        .expect("run sluice-bench chaos");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        stdout.starts_with(&format!("chaos: seed {seed}\n")),
        "the seed comes first:\n{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("chaos summary: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{stderr}"))
        .to_owned();
    assert!(
        output.status.success(),
        "the chaos run failed: {summary}\n{stderr}"
    );
    assert!(summary.contains(" lost=0 "), "{summary}");
    assert!(summary.contains(" state_equal=yes "), "{summary}");
    assert!(summary.contains(" secrets_found=0 "), "{summary}");
    Some((stdout, summary))
}

/// The number after `word` in `text` (`pauses=` → 4).
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {text}"));
    text[at + word.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in {text}"))
}

#[test]
fn a_short_chaos_run_loses_nothing_and_converges_to_the_truth() {
    let seed = std::env::var("SLUICE_CHAOS_SEED").unwrap_or_else(|_| "13".to_owned());
    // Skipped or checked inside.
    let _ = chaos(
        "a_short_chaos_run_loses_nothing_and_converges_to_the_truth",
        &seed,
        &[
            "--seconds",
            "60",
            "--targets",
            "4",
            "--rate",
            "40",
            "--session-timeout",
            "6s",
            "--settle",
            "90s",
        ],
    );
}

#[test]
fn a_short_fleet_chaos_run_pauses_and_rolls_its_workers_and_loses_nothing() {
    let seed = std::env::var("SLUICE_FLEET_CHAOS_SEED").unwrap_or_else(|_| "5".to_owned());
    let Some((stdout, summary)) = chaos(
        "a_short_fleet_chaos_run_pauses_and_rolls_its_workers_and_loses_nothing",
        &seed,
        &[
            "--workers",
            "3",
            "--seconds",
            "20",
            "--targets",
            "4",
            "--rate",
            "40",
            "--settle",
            "90s",
        ],
    ) else {
        return;
    };
    assert!(summary.contains(" workers=3 "), "{summary}");
    assert!(summary.contains(" longest_gap="), "{summary}");
    // Every worker is paused every 6-14 s, so 20 s pause each at least once; some pauses
    // outlast the 3 s session (the group moves the targets of a frozen worker).
    assert!(number_after(&summary, " pauses=") >= 3, "{summary}");
    assert!(number_after(&summary, " worker_kills=") >= 3, "{summary}");
    let fleet = stdout
        .lines()
        .find(|l| l.starts_with("fleet: "))
        .unwrap_or_else(|| panic!("no fleet line:\n{stdout}"));
    if seed == "5" {
        // Seed 5 draws a rolling restart and pauses beyond the session.
        assert!(number_after(fleet, "SIGTERMs ") >= 1, "{fleet}");
        assert!(!summary.contains("(0 > session)"), "{summary}");
    }
}
