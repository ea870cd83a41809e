//! What validation reports: one [`ConfigProblem`] per mistake, all of them gathered in [`ConfigErrors`].

use std::fmt;
use std::path::PathBuf;

/// The class of a configuration problem; bounded, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A file or directory could not be read, or is not valid YAML.
    Unreadable,
    /// A key that the schema does not know.
    UnknownKey,
    /// A value of the wrong type or shape (e.g. a list where a string belongs).
    Malformed,
    /// A required key is absent or empty.
    Missing,
    /// A URL that does not parse or has the wrong scheme.
    BadUrl,
    /// A duration that is not a humantime string such as `30s`.
    BadDuration,
    /// A target id outside `[a-z0-9][a-z0-9._-]{0,62}`.
    BadTargetId,
    /// Two target files with the same id.
    DuplicateTargetId,
    /// A target names a proxy pool that `worker.yaml` does not define.
    UnknownProxyPool,
    /// A secret file that does not exist or cannot be read.
    MissingSecretFile,
    /// A secret environment variable that is not set.
    UnsetSecretEnv,
    /// A secret written inline, e.g. a password inside a proxy URL.
    InlineSecret,
    /// A TLS CA file (`tls.ca_file`) that cannot be read or holds no PEM certificate.
    BadCaFile,
    /// A JSON Pointer that is neither empty nor starts with `/`.
    BadJsonPointer,
    /// Any other value out of its allowed range.
    Invalid,
}

impl ProblemKind {
    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::UnknownKey => "unknown_key",
            ProblemKind::Malformed => "malformed",
            ProblemKind::Missing => "missing",
            ProblemKind::BadUrl => "bad_url",
            ProblemKind::BadDuration => "bad_duration",
            ProblemKind::BadTargetId => "bad_target_id",
            ProblemKind::DuplicateTargetId => "duplicate_target_id",
            ProblemKind::UnknownProxyPool => "unknown_proxy_pool",
            ProblemKind::MissingSecretFile => "missing_secret_file",
            ProblemKind::UnsetSecretEnv => "unset_secret_env",
            ProblemKind::InlineSecret => "inline_secret",
            ProblemKind::BadCaFile => "bad_ca_file",
            ProblemKind::BadJsonPointer => "bad_json_pointer",
            ProblemKind::Invalid => "invalid",
        }
    }
}

/// One mistake in one file: `file: field: message`. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the problem is in (as given, joined with the config directory).
    pub file: PathBuf,
    /// Dotted path of the offending key, e.g. `proxy.pool`; empty for the whole file.
    pub field: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// Class of the problem.
    pub kind: ProblemKind,
}

impl ConfigProblem {
    /// The class of this problem.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

/// Every problem found in one load; displayed one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, in file order and then field order.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigErrors {
    /// The kind of the first problem (a load fails only with at least one).
    pub fn kind(&self) -> ProblemKind {
        self.problems
            .first()
            .map_or(ProblemKind::Invalid, ConfigProblem::kind)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
