//! What a test does when an external program it needs is missing.
//!
//! Locally a missing `tinyproxy` should not make `cargo test` red, but CI must not pass by
//! skipping: `scripts/test` sets `SLUICE_TEST_STRICT=1`, which turns every skip into a failure.

use std::path::{Path, PathBuf};

/// The environment variable that turns skips into failures when set to `1`.
pub const STRICT_ENV: &str = "SLUICE_TEST_STRICT";

/// Whether skips are failures in this run (`SLUICE_TEST_STRICT=1`).
pub fn is_strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Reports that test `what` cannot run because of `why`.
///
/// Under `SLUICE_TEST_STRICT=1` this panics, failing the test. Otherwise it prints a loud
/// `SKIPPED: <what>: <why>` line to stderr and returns, and the caller returns early.
///
/// # Panics
///
/// When `SLUICE_TEST_STRICT=1` is set.
#[track_caller]
pub fn skip_or_fail(what: &str, why: &str) {
    skip_or_fail_when(is_strict(), what, why);
}

#[track_caller]
fn skip_or_fail_when(strict: bool, what: &str, why: &str) {
    if strict {
        panic!("{what}: {why} ({STRICT_ENV}=1 makes a missing program a failure, not a skip)");
    }
    eprintln!("SKIPPED: {what}: {why}");
}

/// The name of the running test, as libtest names its thread (`module::test_name`).
///
/// Falls back to `"unknown test"` when the test runs on an unnamed thread.
pub fn current_test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_owned()
}

/// Finds an executable named `program` on `PATH`, then in `/usr/sbin` and `/usr/bin`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "some_test: tinyproxy is not installed")]
    fn strict_mode_turns_a_skip_into_a_failure() {
        skip_or_fail_when(true, "some_test", "tinyproxy is not installed");
    }

    #[test]
    fn lenient_mode_lets_the_test_return() {
        skip_or_fail_when(false, "some_test", "tinyproxy is not installed");
    }

    #[test]
    fn finds_a_program_every_machine_has() {
        assert!(find_program("sh").is_some());
    }

    #[test]
    fn does_not_find_a_program_that_does_not_exist() {
        assert!(find_program("sluice-no-such-program-anywhere").is_none());
    }

    #[test]
    fn names_the_current_test_after_its_thread() {
        let name = current_test_name();
        // libtest names the thread after the test, except with one test thread where it may
        // run tests on the main thread.
        assert!(
            name.ends_with("names_the_current_test_after_its_thread") || name == "main",
            "unexpected thread name {name}"
        );
    }
}
