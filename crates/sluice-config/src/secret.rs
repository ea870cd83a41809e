//! Secrets by reference: `{env: VAR}` or `{file: /path}`, resolved afresh on every call so that a
//! rotated token or password is picked up on the next reconnect. Values never print.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret lives. `Debug` shows the variable name or path, which are not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// The value of an environment variable.
    Env(String),
    /// The contents of a file, one trailing newline removed. Relative paths were resolved against
    /// the directory of the config file that named them.
    File(PathBuf),
}

impl SecretRef {
    /// Reads the secret now; call again to pick up a rotated value.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(value) => value,
                Err(std::env::VarError::NotPresent) => {
                    return Err(SecretError::EnvUnset { var: var.clone() });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(SecretError::NotUtf8 {
                        source_name: format!("env {var}"),
                    });
                }
            },
            SecretRef::File(path) => read_secret_file(path)?,
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                source_name: self.describe(),
            });
        }
        Ok(Secret(value))
    }

    /// Whether `authorization` (an `Authorization` header's value) is `Bearer <this secret>`,
    /// compared in time that depends on the lengths only. The secret is read afresh, so a
    /// rotated file takes effect on the next request; an unreadable secret is an error (a
    /// server answers 503 then, never lets the request through).
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> Result<bool, SecretError> {
        let expected = self.resolve()?;
        let given = authorization.and_then(|value| value.strip_prefix(b"Bearer "));
        Ok(given.is_some_and(|given| same_bytes(given, expected.expose().as_bytes())))
    }

    /// `env VAR` or `file /path`, for messages.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(var) => format!("env {var}"),
            SecretRef::File(path) => format!("file {}", path.display()),
        }
    }
}

/// Equal bytes, in time that depends on the lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_secret_file(path: &Path) -> Result<String, SecretError> {
    let bytes = std::fs::read(path).map_err(|source| SecretError::File {
        path: path.to_owned(),
        source,
    })?;
    let mut value = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
        source_name: format!("file {}", path.display()),
    })?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// A resolved secret value. `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself; pass it straight to the place that needs it, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret could not be read. Messages name the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("secret env var {var} is not set")]
    EnvUnset {
        /// Variable name.
        var: String,
    },
    /// The file is missing or unreadable.
    #[error("missing secret file {}", path.display())]
    File {
        /// Path of the file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The value is not UTF-8.
    #[error("secret from {source_name} is not utf-8")]
    NotUtf8 {
        /// `env VAR` or `file /path`.
        source_name: String,
    },
    /// The value is empty.
    #[error("secret from {source_name} is empty")]
    Empty {
        /// `env VAR` or `file /path`.
        source_name: String,
    },
}

impl SecretError {
    /// Bounded label of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretError::EnvUnset { .. } => "env_unset",
            SecretError::File { .. } => "file_unreadable",
            SecretError::NotUtf8 { .. } => "not_utf8",
            SecretError::Empty { .. } => "empty",
        }
    }

    /// Whether trying again later can help (a file or variable may appear); all of them can,
    /// since secrets are provisioned from outside.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_prints_as_stars_in_debug_and_display() {
        let secret = Secret("hunter2".to_owned());
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn file_secret_is_reread_on_every_resolve_and_loses_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("sluice-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("token");
        std::fs::write(&path, "one\n").expect("temp file is writable");
        let secret = SecretRef::File(path.clone());
        assert_eq!(secret.resolve().expect("file exists").expose(), "one");
        std::fs::write(&path, "two\r\n").expect("temp file is writable");
        assert_eq!(secret.resolve().expect("file exists").expose(), "two");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_secret_file_names_the_path() {
        let err = SecretRef::File(PathBuf::from("/nonexistent/sluice/token"))
            .resolve()
            .expect_err("file is missing");
        assert_eq!(
            err.to_string(),
            "missing secret file /nonexistent/sluice/token"
        );
        assert_eq!(err.kind(), "file_unreadable");
    }
}
