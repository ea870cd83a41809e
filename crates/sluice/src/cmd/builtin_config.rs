//! The example configuration compiled into the binary, so that `sluice demo` runs from any
//! directory and from the container image: the files of the repository's `config/` (the
//! aggregator file, the worker file it names, every target and the fake example secrets),
//! written to a private temp dir with the same layout and loaded from there like any other
//! config.
//!
//! It must NOT hold a real secret (the secrets are the obviously fake examples) and must NOT be
//! used when the user names a config or a `config/` exists beside them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Every file of `config/`, by its path relative to that directory.
const FILES: &[(&str, &str)] = &[
    (
        "aggregator.yaml",
        include_str!("../../../../config/aggregator.yaml"),
    ),
    (
        "worker.yaml",
        include_str!("../../../../config/worker.yaml"),
    ),
    (
        "targets/sim-prices.yaml",
        include_str!("../../../../config/targets/sim-prices.yaml"),
    ),
    (
        "targets/pooled-scores.yaml",
        include_str!("../../../../config/targets/pooled-scores.yaml"),
    ),
    (
        "secrets/example-proxy-password",
        include_str!("../../../../config/secrets/example-proxy-password"),
    ),
    (
        "secrets/example-bearer-token",
        include_str!("../../../../config/secrets/example-bearer-token"),
    ),
];

/// The built-in configuration, written out; removed when dropped.
#[derive(Debug)]
pub struct BuiltinConfig {
    dir: tempfile::TempDir,
}

impl BuiltinConfig {
    /// Writes the files into a new temp dir.
    pub fn write() -> anyhow::Result<BuiltinConfig> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-demo-config")
            .tempdir()
            .context("cannot create a temp dir for the built-in configuration")?;
        for (name, text) in FILES {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(BuiltinConfig { dir })
    }

    /// The aggregator file to load.
    pub fn aggregator_yaml(&self) -> PathBuf {
        self.dir.path().join("aggregator.yaml")
    }

    /// The directory it was written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_built_in_configuration_loads_and_aggregates_the_simulator_target() {
        let builtin = BuiltinConfig::write().unwrap();
        let config = sluice_config::load_aggregator(&builtin.aggregator_yaml()).unwrap();
        let targets: Vec<&str> = config.targets().map(|(t, _)| t.id.as_str()).collect();
        assert_eq!(targets, ["sim-prices"]);
    }

    #[test]
    fn every_file_of_the_repository_config_dir_is_built_in() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut on_disk = Vec::new();
        for sub in ["", "targets", "secrets"] {
            for entry in std::fs::read_dir(root.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_file() && name != "README.md" {
                    let rel = if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    };
                    on_disk.push(rel);
                }
            }
        }
        on_disk.sort();
        let mut built_in: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        built_in.sort();
        assert_eq!(built_in, on_disk, "config/ and the built-in files differ");
        for (name, text) in FILES {
            assert_eq!(std::fs::read_to_string(root.join(name)).unwrap(), *text);
        }
    }
}
