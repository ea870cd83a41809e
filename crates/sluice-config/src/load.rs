//! Reading: `worker.yaml` or `aggregator.yaml` (plus `SLUICE__…` environment overrides) and every
//! `targets/*.yaml` through the `config` crate into the raw shapes, turning read and schema errors
//! into problems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::problem::{ConfigProblem, ProblemKind};

/// Prefix of environment overrides: `SLUICE__KAFKA__BROKERS=a:9092,b:9092`.
pub const ENV_PREFIX: &str = "SLUICE";
/// Separator between the prefix and the path segments of an environment override.
pub const ENV_SEPARATOR: &str = "__";

/// Reads the file a process was started with (`worker.yaml` or `aggregator.yaml`), with
/// environment overrides applied.
pub(crate) fn read_with_env<T: DeserializeOwned>(
    path: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let env = Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("kafka.brokers")
        .with_list_parse_key("http.cors.allowed_origins");
    let builder = Config::builder()
        .add_source(File::from(path).format(FileFormat::Yaml))
        .add_source(env);
    read(path, builder, problems)
}

/// Reads a file without environment overrides: a target file (targets are many, env is one), or
/// the worker file an aggregator names (the environment belongs to the aggregator's own file).
pub(crate) fn read_file<T: DeserializeOwned>(
    path: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let builder = Config::builder().add_source(File::from(path).format(FileFormat::Yaml));
    read(path, builder, problems)
}

/// Reads a definition that is not a file (the targets topic's record value); `label` names it
/// in problems.
pub(crate) fn read_text<T: DeserializeOwned>(
    label: &Path,
    text: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let builder = Config::builder().add_source(File::from_str(text, FileFormat::Yaml));
    parse(label, builder, problems)
}

/// Whether the YAML file at `path` has the top-level key `key` (even with a null value); `None`
/// when the file cannot be read or parsed (loading it reports why).
pub(crate) fn has_top_level_key(path: &Path, key: &str) -> Option<bool> {
    let config = Config::builder()
        .add_source(File::from(path).format(FileFormat::Yaml))
        .build()
        .ok()?;
    let top: BTreeMap<String, IgnoredAny> = config.try_deserialize().ok()?;
    Some(top.contains_key(key))
}

/// The target files in `dir`: `*.yaml` and `*.yml`, sorted by name, hidden files skipped.
pub(crate) fn target_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with('.'));
        let yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read<T: DeserializeOwned>(
    path: &Path,
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    if let Err(err) = std::fs::metadata(path) {
        problems.push(ConfigProblem {
            file: path.to_owned(),
            field: String::new(),
            message: format!("cannot read file: {}", lowercase_first(&err.to_string())),
            kind: ProblemKind::Unreadable,
        });
        return None;
    }
    parse(path, builder, problems)
}

fn parse<T: DeserializeOwned>(
    path: &Path,
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let config = match builder.build() {
        Ok(config) => config,
        Err(err) => {
            problems.push(ConfigProblem {
                file: path.to_owned(),
                field: String::new(),
                message: format!("not valid yaml: {}", strip_path(&err.to_string(), path)),
                kind: ProblemKind::Unreadable,
            });
            return None;
        }
    };
    match serde_path_to_error::deserialize::<_, T>(config) {
        Ok(raw) => Some(raw),
        Err(err) => {
            let field = err.path().to_string();
            problems.push(schema_problem(path, field, &err.into_inner().to_string()));
            None
        }
    }
}

/// Turns serde's message into ours: `unknown key` with the key in the field path, lowercase.
fn schema_problem(path: &Path, field: String, message: &str) -> ConfigProblem {
    let field = if field == "." { String::new() } else { field };
    // serde: "unknown field `x`, expected one of `a`, `b`" (the config crate may append " for key …").
    let message = message.split(" for key `").next().unwrap_or(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", ").replace('`', "");
        // serde_path_to_error's path already ends with the unknown key.
        let field = if field.is_empty() {
            key.to_owned()
        } else {
            field
        };
        return ConfigProblem {
            file: path.to_owned(),
            field,
            message: format!("unknown key {key:?} ({expected})"),
            kind: ProblemKind::UnknownKey,
        };
    }
    ConfigProblem {
        file: path.to_owned(),
        field,
        message: message.replace('`', "\""),
        kind: ProblemKind::Malformed,
    }
}

fn strip_path(message: &str, path: &Path) -> String {
    message
        .replace(&format!(" in {}", path.display()), "")
        .replace(&path.display().to_string(), "")
}

/// `No such file` → `no such file`: our messages start lowercase, std's I/O errors do not.
pub(crate) fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}
