//! One module per subcommand: argument struct plus `run`; `builtin_config` is the demo's
//! compiled-in configuration.

pub mod admin;
pub mod aggregator;
pub mod builtin_config;
pub mod dead_letters;
pub mod demo;
pub mod metrics;
pub mod openapi;
pub mod sim;
pub mod tail;
pub mod validate;
pub mod worker;

use std::io::Write as _;
use std::process::ExitCode;

/// Prints why `command` refuses to start (every problem, `file: field: message`) and fails.
pub fn refuse_config(command: &str, errors: &sluice_config::ConfigErrors) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "sluice {command}: invalid configuration, not starting ({} problem{}):",
        errors.problems.len(),
        if errors.problems.len() == 1 { "" } else { "s" }
    );
    for problem in &errors.problems {
        let _ = writeln!(stderr, "{problem}");
    }
    ExitCode::FAILURE
}
