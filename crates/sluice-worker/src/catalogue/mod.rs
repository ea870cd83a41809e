//! The target catalogue: every target definition this worker knows, from its target files
//! (read at start, then watched) and from the compacted targets topic (`topic.rs`), merged by
//! id into the set of targets that should run. Each update yields the [`Change`]s from the set
//! before it, which the worker's loop carries out (the owner only, with a fleet).
//!
//! Rules: a definition is validated with the same rules and messages as `sluice validate`; an
//! invalid one changes nothing (an edit that breaks a file keeps the definition it replaced
//! running) and is reported in [`Catalogue::problems`]; an id defined both in a file and in the
//! topic is an error reported there too, and the file's definition runs; a disabled target is
//! not in the set.
//!
//! What it must NOT do: start or stop targets, or read Kafka or the files itself: it only merges
//! what it is given.

pub(crate) mod files;
pub(crate) mod topic;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use sluice_config::{ConfigProblem, TargetConfig, TargetFile, TargetId};

pub(crate) use files::FileWatch;

/// What the worker must do to reach the catalogue's set.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Start this target, or restart it with this definition if it runs.
    Upsert(Arc<TargetConfig>),
    /// Stop this target.
    Remove(TargetId),
}

impl Change {
    /// The target it concerns.
    pub(crate) fn id(&self) -> &TargetId {
        match self {
            Change::Upsert(target) => &target.id,
            Change::Remove(id) => id,
        }
    }
}

/// Where a definition comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(crate) enum Origin {
    /// A target file.
    File { path: PathBuf },
    /// The targets topic.
    Topic,
}

/// A problem with a definition, as `/status` and the admin API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Problem {
    /// The target it concerns, when its id could be read.
    pub(crate) target: Option<String>,
    /// Where the definition is.
    pub(crate) origin: Origin,
    /// What is wrong (the validation messages, `field: message`).
    pub(crate) message: String,
}

impl Problem {
    /// One line: the target, where its definition is, and what is wrong.
    pub(crate) fn line(&self) -> String {
        let origin = match &self.origin {
            Origin::File { path } => path.display().to_string(),
            Origin::Topic => "the targets topic".to_owned(),
        };
        match &self.target {
            Some(target) => format!("{target} ({origin}): {}", self.message),
            None => format!("{origin}: {}", self.message),
        }
    }
}

/// A valid definition and the text it was read from (what a change is detected on; `None`
/// for one known only as loaded at start).
#[derive(Debug, Clone)]
struct Defined {
    text: Option<String>,
    target: Arc<TargetConfig>,
}

/// One target file as last read.
#[derive(Debug, Clone)]
struct FileEntry {
    /// Its last valid definition (kept while an edit breaks it).
    valid: Option<Defined>,
    /// What is wrong with its current content.
    problems: Vec<ConfigProblem>,
}

/// One record of the targets topic as last read.
#[derive(Debug, Clone, Default)]
struct TopicEntry {
    valid: Option<Defined>,
    problem: Option<String>,
}

/// The merged definitions.
#[derive(Debug, Default)]
pub(crate) struct Catalogue {
    files: BTreeMap<PathBuf, FileEntry>,
    /// Whether the targets directory could not be read at the last look.
    dir_problem: Option<ConfigProblem>,
    topic: BTreeMap<TargetId, TopicEntry>,
    /// The set the last changes led to.
    running: BTreeMap<TargetId, Defined>,
}

impl Catalogue {
    /// A catalogue of the targets a worker was started with (as loaded, texts unknown): the
    /// first read of the files restarts only those whose definition differs.
    pub(crate) fn started_with(targets: &[Arc<TargetConfig>]) -> Catalogue {
        let mut catalogue = Catalogue::default();
        for target in targets {
            let defined = Defined {
                text: None,
                target: target.clone(),
            };
            catalogue.running.insert(target.id.clone(), defined);
        }
        catalogue
    }

    /// Takes the target files as they are now: every file read (`files`), or `Err` when the
    /// directory could not be listed (then the file definitions stay as they were).
    pub(crate) fn set_files(
        &mut self,
        files: Result<Vec<TargetFile>, ConfigProblem>,
    ) -> Vec<Change> {
        let files = match files {
            Ok(files) => files,
            Err(problem) => {
                self.dir_problem = Some(problem);
                return Vec::new();
            }
        };
        self.dir_problem = None;
        let mut next = BTreeMap::new();
        for file in files {
            let previous = self.files.remove(&file.path);
            let entry = match file.target {
                Ok(target) => FileEntry {
                    valid: Some(Defined {
                        text: Some(file.text),
                        target: Arc::new(target),
                    }),
                    problems: Vec::new(),
                },
                // A broken edit keeps what ran; a new broken file has nothing to keep.
                Err(problems) => FileEntry {
                    valid: previous.and_then(|p| p.valid),
                    problems,
                },
            };
            next.insert(file.path, entry);
        }
        self.files = next;
        self.changes()
    }

    /// Takes one record of the targets topic: `definition` is the validated value, `Err` with
    /// its problem when invalid, `None` for a tombstone.
    pub(crate) fn set_record(
        &mut self,
        id: TargetId,
        definition: Option<Result<(String, TargetConfig), String>>,
    ) -> Vec<Change> {
        match definition {
            None => {
                self.topic.remove(&id);
            }
            Some(Ok((text, target))) => {
                let entry = self.topic.entry(id).or_default();
                entry.valid = Some(Defined {
                    text: Some(text),
                    target: Arc::new(target),
                });
                entry.problem = None;
            }
            Some(Err(problem)) => {
                // An invalid record changes nothing: the definition before it stays.
                self.topic.entry(id).or_default().problem = Some(problem);
            }
        }
        self.changes()
    }

    /// The targets a file defines, with the file (the first by path, for a duplicate id).
    pub(crate) fn file_ids(&self) -> BTreeMap<String, PathBuf> {
        let (by_id, _) = self.file_definitions();
        by_id
            .into_iter()
            .map(|(id, (path, _))| (id.to_string(), path))
            .collect()
    }

    /// The targets the topic defines (valid definitions).
    pub(crate) fn topic_ids(&self) -> BTreeSet<String> {
        self.topic
            .iter()
            .filter(|(_, e)| e.valid.is_some())
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// The targets that should run now, by id.
    pub(crate) fn targets(&self) -> Vec<Arc<TargetConfig>> {
        self.running.values().map(|d| d.target.clone()).collect()
    }

    /// Every problem: invalid files and records, duplicate ids, ids defined in both places.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(problem) = &self.dir_problem {
            problems.push(Problem {
                target: None,
                origin: Origin::File {
                    path: problem.file.clone(),
                },
                message: format!("{}: {}", problem.field, problem.message),
            });
        }
        for (path, entry) in &self.files {
            let target = entry.valid.as_ref().map(|v| v.target.id.to_string());
            for problem in &entry.problems {
                let message = if problem.field.is_empty() {
                    problem.message.clone()
                } else {
                    format!("{}: {}", problem.field, problem.message)
                };
                let message = match &target {
                    Some(_) => format!("{message} (the definition before this edit still runs)"),
                    None => message,
                };
                problems.push(Problem {
                    target: target.clone(),
                    origin: Origin::File { path: path.clone() },
                    message,
                });
            }
        }
        let (by_file, duplicates) = self.file_definitions();
        for (path, id, first) in duplicates {
            problems.push(Problem {
                target: Some(id.to_string()),
                origin: Origin::File { path },
                message: format!(
                    "id: duplicate target id {:?} (also in {}): this file is ignored",
                    id.as_str(),
                    first.display()
                ),
            });
        }
        for (id, entry) in &self.topic {
            if let Some(problem) = &entry.problem {
                let kept = if entry.valid.is_some() {
                    " (the definition before this record still runs)"
                } else {
                    ""
                };
                problems.push(Problem {
                    target: Some(id.to_string()),
                    origin: Origin::Topic,
                    message: format!("{problem}{kept}"),
                });
            }
            if entry.valid.is_some()
                && let Some((path, _)) = by_file.get(id)
            {
                problems.push(Problem {
                    target: Some(id.to_string()),
                    origin: Origin::Topic,
                    message: format!(
                        "target {:?} is defined both in {} and in the targets topic: the file's definition runs; delete one",
                        id.as_str(),
                        path.display()
                    ),
                });
            }
        }
        problems
    }

    /// The valid file definitions by id (the first file by path wins), and the duplicates:
    /// (file, id, the file that defines it first).
    #[allow(clippy::type_complexity)]
    fn file_definitions(
        &self,
    ) -> (
        BTreeMap<TargetId, (PathBuf, Defined)>,
        Vec<(PathBuf, TargetId, PathBuf)>,
    ) {
        let mut by_id: BTreeMap<TargetId, (PathBuf, Defined)> = BTreeMap::new();
        let mut duplicates = Vec::new();
        for (path, entry) in &self.files {
            let Some(valid) = &entry.valid else { continue };
            let id = valid.target.id.clone();
            if let Some((first, _)) = by_id.get(&id) {
                duplicates.push((path.clone(), id, first.clone()));
                continue;
            }
            by_id.insert(id, (path.clone(), valid.clone()));
        }
        (by_id, duplicates)
    }

    /// The set now, and what changed since the last call.
    fn changes(&mut self) -> Vec<Change> {
        let (by_file, _) = self.file_definitions();
        let mut next: BTreeMap<TargetId, Defined> = by_file
            .into_iter()
            .map(|(id, (_, defined))| (id, defined))
            .collect();
        for (id, entry) in &self.topic {
            if let Some(valid) = &entry.valid
                && !next.contains_key(id)
            {
                next.insert(id.clone(), valid.clone());
            }
        }
        next.retain(|_, d| d.target.enabled);
        let mut changes = Vec::new();
        let gone: BTreeSet<TargetId> = self
            .running
            .keys()
            .filter(|id| !next.contains_key(*id))
            .cloned()
            .collect();
        changes.extend(gone.into_iter().map(Change::Remove));
        for (id, defined) in &next {
            let changed = match self.running.get(id) {
                None => true,
                // Known only as loaded at start: compared by what it validated to.
                Some(before) => match &before.text {
                    None => !same_config(&before.target, &defined.target),
                    Some(text) => defined.text.as_ref() != Some(text),
                },
            };
            if changed {
                changes.push(Change::Upsert(defined.target.clone()));
            }
        }
        self.running = next;
        changes
    }
}

/// Whether two validated definitions are the same: every field, by its debug form (secrets
/// appear as references only).
fn same_config(a: &TargetConfig, b: &TargetConfig) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

#[cfg(test)]
mod tests;
