//! The one validation pass: raw shapes in, domain types out, every problem recorded with its file
//! and field. Nothing downstream of this module sees an unvalidated value.

mod aggregate;
mod aggregator;
mod delivery;
mod destination;
mod fleet;
mod pagination;
mod request;
mod target;
mod worker;

pub(crate) use aggregator::aggregator;
pub(crate) use target::{target, target_in};
pub(crate) use worker::worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use sluice_sse::Limits;
use url::Url;

use crate::metrics::{MetricsConfig, PerTarget};
use crate::problem::{ConfigProblem, ProblemKind};
use crate::proxy::ProxyConfig;
use crate::raw::{
    RawBackoff, RawBody, RawDefaults, RawKey, RawLimits, RawMetrics, RawOAuth2, RawProxy,
    RawShutdown, RawTarget, RawTls, RawValueRef, RawWorker,
};
use crate::secret::{SecretError, SecretRef};
use crate::target::{
    Auth, BodySource, ClientIdentity, HeaderSource, OAuth2Config, RecordKey, RequestBody,
    TargetConfig, TargetId, TargetProxy,
};
use crate::worker::{
    AdminConfig, Backoff, Defaults, HttpConfig, KafkaConfig, ShutdownConfig, Topics, WorkerConfig,
};

/// Problems found so far, all tied to one file at a time.
pub(crate) struct Checker<'a> {
    file: PathBuf,
    /// Where relative paths resolve (`None`: the file's directory).
    base: Option<PathBuf>,
    problems: &'a mut Vec<ConfigProblem>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(file: &Path, problems: &'a mut Vec<ConfigProblem>) -> Self {
        Checker {
            file: file.to_owned(),
            base: None,
            problems,
        }
    }

    /// Relative paths resolve in `base`, not in the file's directory (a definition that is not a
    /// file: the targets topic's, whose paths are the targets directory's).
    pub(crate) fn resolving_in(mut self, base: &Path) -> Self {
        self.base = Some(base.to_owned());
        self
    }

    fn report(&mut self, field: &str, kind: ProblemKind, message: String) {
        self.problems.push(ConfigProblem {
            file: self.file.clone(),
            field: field.to_owned(),
            message,
            kind,
        });
    }

    /// Directory that relative paths in this file are resolved against.
    fn dir(&self) -> PathBuf {
        if let Some(base) = &self.base {
            return base.clone();
        }
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn duration(&mut self, field: &str, raw: Option<&str>, default: Duration) -> Duration {
        self.opt_duration(field, raw).unwrap_or(default)
    }

    fn opt_duration(&mut self, field: &str, raw: Option<&str>) -> Option<Duration> {
        let raw = raw?;
        match humantime::parse_duration(raw.trim()) {
            Ok(duration) if duration > MAX_DURATION => {
                self.report(
                    field,
                    ProblemKind::BadDuration,
                    format!(
                        "duration {raw:?} is too long: at most {}",
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
                None
            }
            Ok(duration) => Some(duration),
            Err(_) => {
                self.report(
                    field,
                    ProblemKind::BadDuration,
                    format!("bad duration {raw:?}: write a number and a unit, e.g. 30s, 500ms, 5m"),
                );
                None
            }
        }
    }

    fn positive(&mut self, field: &str, value: Duration) {
        if value.is_zero() {
            self.report(
                field,
                ProblemKind::Invalid,
                "must be more than 0s".to_owned(),
            );
        }
    }

    fn topic(&mut self, field: &str, raw: Option<&str>, default: &str) -> String {
        let Some(topic) = raw else {
            return default.to_owned();
        };
        if !legal_kafka_name(topic) || topic == "." || topic == ".." {
            self.report(
                field,
                ProblemKind::Invalid,
                format!("bad kafka topic {topic:?}: use 1 to 249 of a-z A-Z 0-9 . _ -"),
            );
        }
        topic.to_owned()
    }

    /// A secret reference: exactly one of `env`/`file`; checks the variable is set or the file is
    /// readable, never keeping or printing the value.
    fn secret(&mut self, field: &str, raw: &RawValueRef) -> Option<SecretRef> {
        let secret = match (&raw.env, &raw.file, &raw.value) {
            (_, _, Some(_)) => {
                self.report(
                    field,
                    ProblemKind::InlineSecret,
                    "secrets are never inline: use {env: VAR} or {file: /path}".to_owned(),
                );
                return None;
            }
            (Some(var), None, None) if !var.is_empty() => SecretRef::Env(var.clone()),
            (None, Some(file), None) if !file.is_empty() => SecretRef::File(self.dir().join(file)),
            _ => {
                self.report(
                    field,
                    ProblemKind::Malformed,
                    "write exactly one of {env: VAR} or {file: /path}".to_owned(),
                );
                return None;
            }
        };
        self.check_secret(field, &secret);
        Some(secret)
    }

    fn check_secret(&mut self, field: &str, secret: &SecretRef) {
        let Err(err) = secret.resolve() else {
            return;
        };
        let kind = match err {
            SecretError::EnvUnset { .. } => ProblemKind::UnsetSecretEnv,
            SecretError::File { .. } => ProblemKind::MissingSecretFile,
            SecretError::NotUtf8 { .. } | SecretError::Empty { .. } => ProblemKind::Invalid,
        };
        self.report(field, kind, err.to_string());
    }

    fn backoff(&mut self, field: &str, raw: &RawBackoff, base: Backoff) -> Backoff {
        let backoff = Backoff {
            initial: self.duration(
                &format!("{field}.initial"),
                raw.initial.as_deref(),
                base.initial,
            ),
            max: self.duration(&format!("{field}.max"), raw.max.as_deref(), base.max),
            reset_after: self.duration(
                &format!("{field}.reset_after"),
                raw.reset_after.as_deref(),
                base.reset_after,
            ),
        };
        let overridden = raw.initial.is_some() || raw.max.is_some() || raw.reset_after.is_some();
        if overridden {
            self.positive(&format!("{field}.initial"), backoff.initial);
        }
        // Only where this file set a value, so one bad default is reported once, not per target.
        if overridden && backoff.max < backoff.initial {
            self.report(
                &format!("{field}.max"),
                ProblemKind::Invalid,
                format!(
                    "backoff max {} is below initial {}",
                    humantime::format_duration(backoff.max),
                    humantime::format_duration(backoff.initial)
                ),
            );
        }
        backoff
    }

    fn limits(&mut self, field: &str, raw: &RawLimits, base: Limits) -> Limits {
        let mut limits = base;
        if let Some(bytes) = raw.max_line_bytes {
            limits.max_line_bytes = self.byte_count(&format!("{field}.max_line_bytes"), bytes);
        }
        if let Some(bytes) = raw.max_event_bytes {
            limits.max_event_bytes = self.byte_count(&format!("{field}.max_event_bytes"), bytes);
        }
        limits
    }

    fn byte_count(&mut self, field: &str, bytes: u64) -> usize {
        match usize::try_from(bytes) {
            Ok(n) if n > 0 => n,
            _ => {
                self.report(
                    field,
                    ProblemKind::Invalid,
                    format!("bad byte count {bytes}"),
                );
                1
            }
        }
    }

    /// Kafka bootstrap servers: trimmed, at least one, each `host:port`.
    fn brokers(&mut self, raw: &[String]) -> Vec<String> {
        let brokers: Vec<String> = raw
            .iter()
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() {
            self.report(
                "kafka.brokers",
                ProblemKind::Missing,
                "no kafka brokers: list at least one host:port (or set SLUICE__KAFKA__BROKERS)"
                    .to_owned(),
            );
        }
        for broker in &brokers {
            let port_ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                self.report(
                    "kafka.brokers",
                    ProblemKind::Invalid,
                    format!("bad broker {broker:?}: write host:port"),
                );
            }
        }
        brokers
    }

    /// A Kafka name such as `client.id` or `group.id`: `default` when absent, never blank.
    fn name(&mut self, field: &str, raw: Option<&str>, default: &str) -> String {
        let name = raw.unwrap_or(default);
        if name.trim().is_empty() {
            let what = field.rsplit('.').next().unwrap_or(field).replace('_', " ");
            self.report(field, ProblemKind::Invalid, format!("empty {what}"));
        }
        name.to_owned()
    }

    /// Extra librdkafka properties: none that sluice sets itself (`managed`: key and what to do
    /// instead), and no inline secrets.
    fn kafka_properties(&mut self, properties: &BTreeMap<String, String>, managed: &[Managed]) {
        for key in properties.keys() {
            let field = format!("kafka.properties.{key}");
            let reason = managed
                .iter()
                .flat_map(|list| list.iter())
                .find_map(|(name, reason)| (name == key).then_some(reason));
            if let Some(reason) = reason {
                self.report(
                    &field,
                    ProblemKind::Invalid,
                    format!("property {key:?} is managed by sluice: {reason}"),
                );
            } else if key.contains("password") || key.contains("secret") {
                self.report(
                    &field,
                    ProblemKind::InlineSecret,
                    format!(
                        "secret property {key:?} cannot be inline in the config: \
                         write it under kafka.secret_properties as {{env: VAR}} or {{file: /path}}"
                    ),
                );
            }
        }
    }

    /// `kafka.secret_properties`: librdkafka properties whose values are secret references,
    /// none of them managed by sluice or also written in `kafka.properties`.
    fn kafka_secret_properties(
        &mut self,
        raw: &BTreeMap<String, RawValueRef>,
        properties: &BTreeMap<String, String>,
        managed: &[Managed],
    ) -> BTreeMap<String, SecretRef> {
        let mut secrets = BTreeMap::new();
        for (key, value) in raw {
            let field = format!("kafka.secret_properties.{key}");
            let is_managed = managed
                .iter()
                .flat_map(|list| list.iter())
                .any(|(name, _)| name == key);
            if is_managed {
                self.report(
                    &field,
                    ProblemKind::Invalid,
                    format!("property {key:?} is managed by sluice"),
                );
            } else if properties.contains_key(key) {
                self.report(
                    &field,
                    ProblemKind::Invalid,
                    format!("property {key:?} is also in kafka.properties: write it once"),
                );
            } else if let Some(secret) = self.secret(&field, value) {
                secrets.insert(key.clone(), secret);
            }
        }
        secrets
    }

    /// The `http` section's listen address, `default` when absent.
    fn listen(&mut self, raw: Option<&str>, default: &str) -> SocketAddr {
        let listen_raw = raw.unwrap_or(default);
        match listen_raw.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.report(
                    "http.listen",
                    ProblemKind::Invalid,
                    format!("bad listen address {listen_raw:?}: write ip:port, e.g. 0.0.0.0:9090"),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    /// The `shutdown` section.
    fn shutdown(&mut self, raw: &RawShutdown) -> ShutdownConfig {
        ShutdownConfig {
            grace: self.duration(
                "shutdown.grace",
                raw.grace.as_deref(),
                ShutdownConfig::DEFAULT_GRACE,
            ),
        }
    }

    /// `metrics:`: `per_target` is `all`, `essential` (the default) or `none`.
    fn metrics(&mut self, raw: &RawMetrics) -> MetricsConfig {
        let per_target = match raw.per_target.as_deref().map(str::parse::<PerTarget>) {
            None => PerTarget::default(),
            Some(Ok(mode)) => mode,
            Some(Err(error)) => {
                self.report(
                    "metrics.per_target",
                    ProblemKind::Invalid,
                    error.to_string(),
                );
                PerTarget::default()
            }
        };
        MetricsConfig { per_target }
    }

    /// A JSON Pointer (RFC 6901), reported when malformed and returned as written.
    fn pointer(&mut self, field: &str, raw: &str) -> String {
        if !json_pointer_ok(raw) {
            self.report(
                field,
                ProblemKind::BadJsonPointer,
                format!(
                    "bad json pointer {raw:?}: it must be empty or start with /, and ~ must be followed by 0 or 1"
                ),
            );
        }
        raw.to_owned()
    }

    /// A list of SSE event types: none empty.
    fn event_types(&mut self, field: &str, event_types: &[String]) {
        for (i, event_type) in event_types.iter().enumerate() {
            if event_type.is_empty() {
                self.report(
                    &format!("{field}[{i}]"),
                    ProblemKind::Invalid,
                    "empty event type".to_owned(),
                );
            }
        }
    }
}

/// The longest duration any setting takes. Every timeout, interval and backoff a Sluice process
/// runs on is far below it; the bound keeps deadline arithmetic from overflowing (a panic) and a
/// typo (`30d` for `30s`) from parking a target for a month.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Whether `name` is made of what Kafka allows in a topic name or a `group.instance.id`: 1 to
/// 249 of `a-z A-Z 0-9 . _ -`.
fn legal_kafka_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// librdkafka properties sluice sets itself, each with what to write instead.
type Managed = &'static [(&'static str, &'static str)];

/// Set by every sluice Kafka client.
const CLIENT_MANAGED: Managed = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    ("client.id", "set kafka.client_id instead"),
];

/// Set by every sluice producer.
const PRODUCER_MANAGED: Managed = &[
    (
        "acks",
        "sluice always produces with acks=all and idempotence",
    ),
    (
        "enable.idempotence",
        "sluice always produces with acks=all and idempotence",
    ),
    (
        "partitioner",
        "sluice places every record itself (crc-32 of the target id modulo the partition count), \
         so that the aggregator and the fleet agree on where a target's records are",
    ),
];

const PEM_BEGIN_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END_CERTIFICATE: &str = "-----END CERTIFICATE-----";

/// Whether `bytes` hold a `-----BEGIN CERTIFICATE-----` marker followed later by its
/// `-----END CERTIFICATE-----`: enough to tell a PEM bundle from a DER file, a key or a typo'd
/// path, without a crypto dependency.
fn holds_pem_certificate(bytes: &[u8]) -> bool {
    find(bytes, PEM_BEGIN_CERTIFICATE.as_bytes())
        .is_some_and(|at| find(&bytes[at..], PEM_END_CERTIFICATE.as_bytes()).is_some())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// RFC 6901: empty, or `/`-separated tokens where `~` is only `~0` or `~1`.
fn json_pointer_ok(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    if !pointer.starts_with('/') {
        return false;
    }
    let mut chars = pointer.chars();
    while let Some(ch) = chars.next() {
        if ch == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{holds_pem_certificate, json_pointer_ok};

    #[test]
    fn pem_check_wants_a_begin_certificate_block_with_its_end() {
        let pem = b"subject=CN=x\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(holds_pem_certificate(pem));
        for bad in [
            &b""[..],
            b"\x30\x82\x01\x0a",
            b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nMIIB truncated",
            b"-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n",
        ] {
            assert!(
                !holds_pem_certificate(bad),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn json_pointer_must_be_empty_or_start_with_a_slash_with_valid_escapes() {
        for ok in ["", "/", "/key", "/a/0/b", "/a~0b/c~1d"] {
            assert!(json_pointer_ok(ok), "{ok}");
        }
        for bad in ["key", "#/key", "/a~", "/a~2"] {
            assert!(!json_pointer_ok(bad), "{bad}");
        }
    }
}
