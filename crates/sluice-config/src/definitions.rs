//! Target definitions read while a worker runs: the targets directory again (it is watched), and
//! one definition given as text (a record of the targets topic, an admin API request body), both
//! validated with the same rules and messages as [`crate::load`] uses at start.
//!
//! Must not: read Kafka or any file outside the targets directory and the secrets and CA files a
//! target names; a definition that is not a file resolves its relative paths in the targets
//! directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::problem::{ConfigErrors, ConfigProblem, ProblemKind};
use crate::target::{TargetConfig, TargetId};
use crate::worker::WorkerConfig;
use crate::{load, raw, validate};

/// One target file as the worker last read it.
#[derive(Debug, Clone)]
pub struct TargetFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its content as read (what a change is detected on).
    pub text: String,
    /// Its id when one parses, even when the definition has other problems (so a broken edit
    /// can be tied to the target it breaks).
    pub id: Option<TargetId>,
    /// The validated target, or every problem found in it.
    pub target: Result<TargetConfig, Vec<ConfigProblem>>,
}

/// Reads and validates every file in `worker.targets_dir`, as [`crate::load`] does: the second
/// file with an id already seen gets a `duplicate_target_id` problem.
///
/// `Err`: the directory itself cannot be listed.
pub fn read_target_files(worker: &WorkerConfig) -> Result<Vec<TargetFile>, ConfigProblem> {
    Ok(validate_files(target_file_paths(worker)?, worker, true))
}

/// The target files in `worker.targets_dir` (`*.yaml`, `*.yml`, hidden ones skipped), sorted.
///
/// `Err`: the directory itself cannot be listed.
pub fn target_file_paths(worker: &WorkerConfig) -> Result<Vec<PathBuf>, ConfigProblem> {
    load::target_files(&worker.targets_dir).map_err(|err| ConfigProblem {
        file: worker.file.clone(),
        field: "targets_dir".to_owned(),
        message: format!(
            "cannot read targets directory {}: {}",
            worker.targets_dir.display(),
            load::lowercase_first(&err.to_string())
        ),
        kind: ProblemKind::Unreadable,
    })
}

/// Reads and validates one target file (no duplicate check: that needs every file).
pub fn read_target_file(path: &Path, worker: &WorkerConfig) -> TargetFile {
    let mut files = validate_files(vec![path.to_owned()], worker, true);
    files.pop().unwrap_or_else(|| TargetFile {
        path: path.to_owned(),
        text: String::new(),
        id: None,
        target: Err(Vec::new()),
    })
}

/// Validates one target definition given as YAML text; `label` names it in problems (the
/// targets topic and the id, for example). Relative paths resolve in the targets directory.
pub fn target_from_text(
    label: &Path,
    text: &str,
    worker: &WorkerConfig,
) -> Result<TargetConfig, ConfigErrors> {
    let mut problems = Vec::new();
    let target = load::read_text::<raw::RawTarget>(label, text, &mut problems).and_then(|raw| {
        validate::target_in(label, Some(&worker.targets_dir), raw, worker, &mut problems)
    });
    match target {
        Some(target) if problems.is_empty() => Ok(target),
        _ => Err(ConfigErrors { problems }),
    }
}

/// Reads and validates `paths` in order. `worker_ok`: whether the worker file parsed (without
/// it the proxy pool names are unknown, not wrong, so those problems are dropped).
pub(crate) fn validate_files(
    paths: Vec<PathBuf>,
    worker: &WorkerConfig,
    worker_ok: bool,
) -> Vec<TargetFile> {
    let mut seen: BTreeMap<TargetId, PathBuf> = BTreeMap::new();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let mut problems = Vec::new();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                problems.push(ConfigProblem {
                    file: path.clone(),
                    field: String::new(),
                    message: format!(
                        "cannot read file: {}",
                        load::lowercase_first(&err.to_string())
                    ),
                    kind: ProblemKind::Unreadable,
                });
                files.push(TargetFile {
                    path,
                    text: String::new(),
                    id: None,
                    target: Err(problems),
                });
                continue;
            }
        };
        let Some(raw) = load::read_text::<raw::RawTarget>(&path, &text, &mut problems) else {
            files.push(TargetFile {
                path,
                text,
                id: None,
                target: Err(problems),
            });
            continue;
        };
        let id = raw.id.as_deref().and_then(|id| id.parse::<TargetId>().ok());
        let target = validate::target(&path, raw, worker, &mut problems);
        problems.retain(|p| worker_ok || p.kind != ProblemKind::UnknownProxyPool);
        // Duplicates are checked on every parseable id, even of targets with other problems.
        if let Some(id) = &id {
            if let Some(first) = seen.get(id) {
                problems.push(ConfigProblem {
                    file: path.clone(),
                    field: "id".to_owned(),
                    message: format!(
                        "duplicate target id {:?} (also in {})",
                        id.as_str(),
                        first.display()
                    ),
                    kind: ProblemKind::DuplicateTargetId,
                });
            } else {
                seen.insert(id.clone(), path.clone());
            }
        }
        let target = match target {
            Some(target) if problems.is_empty() => Ok(target),
            _ => Err(problems),
        };
        files.push(TargetFile {
            path,
            text,
            id,
            target,
        });
    }
    files
}
