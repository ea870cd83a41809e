//! Python programs from PyPI for the tests and the benchmarks (the Python scraper of
//! `sluice-bench`, schemathesis): a virtualenv per use under `~/.cache/sluice/venv-<name>` (or
//! `$SLUICE_VENV_ROOT/venv-<name>`), created with the system's `python3` (or `SLUICE_PYTHON`)
//! and given its pinned packages when they are missing (`pip` does nothing when they are
//! there). It must not install anything outside that directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `command`, failing with its output when it fails.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The virtualenv `name`'s directory.
pub fn venv_dir(name: &str) -> Result<PathBuf, String> {
    let root = match std::env::var_os("SLUICE_VENV_ROOT") {
        Some(root) => PathBuf::from(root),
        None => {
            let home =
                std::env::var_os("HOME").ok_or("HOME is not set (or set SLUICE_VENV_ROOT)")?;
            Path::new(&home).join(".cache/sluice")
        }
    };
    Ok(root.join(format!("venv-{name}")))
}

/// The interpreter of the virtualenv `name`, with `packages` (pip requirement specifiers)
/// installed; its `bin/` holds their programs. Blocks while it creates or fills it.
pub fn venv(name: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let dir = venv_dir(name)?;
    let python = dir.join("bin/python");
    if !python.exists() {
        let system = std::env::var_os("SLUICE_PYTHON").unwrap_or_else(|| "python3".into());
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        run(
            Command::new(&system).arg("-m").arg("venv").arg(&dir),
            &format!("{} -m venv", system.to_string_lossy()),
        )?;
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages),
        &format!("pip install {}", packages.join(" ")),
    )?;
    Ok(python)
}
