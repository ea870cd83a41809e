//! The run's secret values (a token header on every target, the password of each proxy), drawn
//! from the seed, and the search for them in anything Sluice wrote: logs, metrics, status pages,
//! Kafka records. Findings name where a secret showed up, never the secret itself.

use std::collections::BTreeMap;
use std::path::Path;

use super::rng::Rng;

/// A secret and its name in reports.
#[derive(Clone)]
pub struct Secret {
    /// What it is, e.g. `token header`.
    pub name: &'static str,
    /// Its value (never printed).
    pub value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.name)
    }
}

/// Every secret of one run.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The `X-Chaos-Token` header value sent to every target.
    pub token: Secret,
    /// tinyproxy's BasicAuth password.
    pub http_proxy_password: Secret,
    /// microsocks' password.
    pub socks_proxy_password: Secret,
}

impl Secrets {
    /// Secrets for `seed`: letters and digits only (tinyproxy's config takes no quoting).
    pub fn new(seed: u64) -> Secrets {
        let mut rng = Rng::new(seed, 7);
        let mut value = |prefix: &str| {
            format!(
                "{prefix}{:016x}{:08x}",
                rng.next_u64(),
                rng.next_u64() >> 32
            )
        };
        Secrets {
            token: Secret {
                name: "token header",
                value: value("tok"),
            },
            http_proxy_password: Secret {
                name: "http proxy password",
                value: value("hpw"),
            },
            socks_proxy_password: Secret {
                name: "socks proxy password",
                value: value("spw"),
            },
        }
    }

    fn all(&self) -> [&Secret; 3] {
        [
            &self.token,
            &self.http_proxy_password,
            &self.socks_proxy_password,
        ]
    }
}

/// Where secrets were found: `place -> secret name -> occurrences`.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    found: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// How many texts (pages, files, records) were searched.
    pub searched: u64,
}

impl Findings {
    /// Searches `text`, seen at `place`.
    pub fn scan(&mut self, secrets: &Secrets, place: &str, text: &[u8]) {
        self.searched += 1;
        for secret in secrets.all() {
            let n = count(text, secret.value.as_bytes());
            if n > 0 {
                *self
                    .found
                    .entry(place.to_owned())
                    .or_default()
                    .entry(secret.name)
                    .or_default() += n;
            }
        }
    }

    /// Searches every file under `dir` (recursively), named by their path relative to it.
    pub fn scan_dir(&mut self, secrets: &Secrets, dir: &Path, skip: &dyn Fn(&Path) -> bool) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip(&path) {
                continue;
            }
            if path.is_dir() {
                self.scan_dir(secrets, &path, skip);
            } else if let Ok(bytes) = std::fs::read(&path) {
                self.scan(secrets, &path.display().to_string(), &bytes);
            }
        }
    }

    /// Adds another set of findings.
    pub fn merge(&mut self, other: Findings) {
        self.searched += other.searched;
        for (place, secrets) in other.found {
            let mine = self.found.entry(place).or_default();
            for (name, n) in secrets {
                *mine.entry(name).or_default() += n;
            }
        }
    }

    /// Total occurrences of any secret.
    pub fn total(&self) -> u64 {
        self.found.values().flat_map(BTreeMap::values).sum()
    }

    /// One line per place: `place: name xN, ...`.
    pub fn lines(&self) -> Vec<String> {
        self.found
            .iter()
            .map(|(place, secrets)| {
                let what: Vec<String> = secrets.iter().map(|(n, c)| format!("{n} x{c}")).collect();
                format!("{place}: {}", what.join(", "))
            })
            .collect()
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_and_named_but_never_printed() {
        let secrets = Secrets::new(5);
        assert_eq!(secrets.token.value, Secrets::new(5).token.value);
        assert!(
            secrets
                .token
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        let mut findings = Findings::default();
        findings.scan(&secrets, "log", b"nothing here");
        assert_eq!(findings.total(), 0);
        let text = format!("a {} b {}", secrets.token.value, secrets.token.value);
        findings.scan(&secrets, "metrics", text.as_bytes());
        findings.scan(
            &secrets,
            "record",
            secrets.socks_proxy_password.value.as_bytes(),
        );
        assert_eq!(findings.total(), 3);
        assert_eq!(findings.searched, 3);
        let lines = findings.lines().join("\n");
        assert!(lines.contains("metrics: token header x2"), "{lines}");
        assert!(!lines.contains(&secrets.token.value));
        assert!(!format!("{secrets:?}").contains(&secrets.token.value));
    }
}
