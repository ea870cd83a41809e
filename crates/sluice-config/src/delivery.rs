//! The validated `deliveries:` of `aggregator.yaml`: which targets' states are written as
//! datasets, how often, in which format, where, and how many are kept.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::secret::SecretRef;

/// One `deliveries:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Which targets it delivers.
    pub targets: DeliveryTargets,
    /// When deliveries happen.
    pub schedule: DeliverySchedule,
    /// The file format.
    pub format: DeliveryFormat,
    /// Where the files go.
    pub destination: Destination,
    /// Deliveries kept per target (older ones are deleted, data and manifest); at least 1.
    pub keep: usize,
    /// The columns of a CSV or Parquet delivery, after `key`; `None`: inferred from the
    /// entities (every top-level field).
    pub columns: Option<Vec<Column>>,
}

/// One configured column of a CSV or Parquet delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name in the file (unique, not `key`).
    pub name: String,
    /// A JSON Pointer into each entity.
    pub pointer: String,
    /// What it holds.
    pub kind: ColumnType,
}

/// A configured column's type. A value that is not of it is written as null and counted in the
/// manifest's `mismatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A string as it is; any other value as JSON text.
    String,
    /// An integer that fits 64 bits.
    Int64,
    /// Any number.
    Float64,
    /// `true` or `false`.
    Boolean,
    /// Any value as JSON text (a string quoted).
    Json,
}

impl ColumnType {
    /// Every type, as written in the config.
    pub const ALL: [ColumnType; 5] = [
        ColumnType::String,
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Boolean,
        ColumnType::Json,
    ];

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "json",
        }
    }
}

impl DeliveryConfig {
    /// Default [`DeliveryConfig::keep`].
    pub const DEFAULT_KEEP: usize = 10;

    /// Whether this entry delivers `target`.
    pub fn covers(&self, target: &str) -> bool {
        match &self.targets {
            DeliveryTargets::All => true,
            DeliveryTargets::Ids(ids) => ids.iter().any(|id| id == target),
        }
    }
}

/// `targets`: every aggregated target, or the ones named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryTargets {
    /// `all`.
    All,
    /// Target ids (each an enabled target with an `aggregate` section).
    Ids(Vec<String>),
}

/// A delivery's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFormat {
    /// JSON Lines: one `{"key": …, "value": …}` object per entity, in key order.
    Jsonl,
    /// CSV: a `key` column, then the union of the entities' top-level fields (sorted); nested
    /// values as JSON text.
    Csv,
    /// Parquet: the CSV's columns, typed from the values (boolean, int64, float64, else string;
    /// nested values as JSON text).
    Parquet,
}

impl DeliveryFormat {
    /// Every format, as written in the config.
    pub const ALL: [DeliveryFormat; 3] = [
        DeliveryFormat::Jsonl,
        DeliveryFormat::Csv,
        DeliveryFormat::Parquet,
    ];

    /// The config word, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryFormat::Jsonl => "jsonl",
            DeliveryFormat::Csv => "csv",
            DeliveryFormat::Parquet => "parquet",
        }
    }
}

/// Where deliveries are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A directory (resolved against the aggregator file's directory): each target's deliveries
    /// in `<dir>/<target>/`.
    Dir(PathBuf),
    /// An S3 bucket (AWS or any S3-compatible server): each target's deliveries under
    /// `<prefix><target>/`.
    S3(S3Destination),
}

impl Destination {
    /// Where it is, for logs and messages: the directory, or `s3://bucket/prefix` (with the
    /// endpoint when there is one). Never a credential.
    pub fn describe(&self) -> String {
        match self {
            Destination::Dir(dir) => dir.display().to_string(),
            Destination::S3(s3) => s3.describe(),
        }
    }
}

/// `destination.s3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Destination {
    /// The bucket's name.
    pub bucket: String,
    /// Prepended to every object name: empty, or ending in `/`.
    pub prefix: String,
    /// An S3-compatible server's base URL (`http` or `https`, path-style requests); `None`:
    /// AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// The signing region.
    pub region: String,
    /// Explicit credentials; `None`: the AWS environment's (`AWS_*` variables, web identity,
    /// instance metadata).
    pub credentials: Option<S3Credentials>,
}

impl S3Destination {
    /// Default [`S3Destination::region`].
    pub const DEFAULT_REGION: &str = "us-east-1";

    /// `s3://bucket/prefix`, with ` at <endpoint>` for a server other than AWS.
    pub fn describe(&self) -> String {
        let at = match &self.endpoint {
            Some(endpoint) => format!(" at {endpoint}"),
            None => String::new(),
        };
        format!("s3://{}/{}{at}", self.bucket, self.prefix)
    }
}

/// `destination.s3` credentials, read at each delivery round (a rotated secret is picked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `access_key_id`.
    pub access_key_id: SecretRef,
    /// `secret_access_key`.
    pub secret_access_key: SecretRef,
    /// `session_token` (temporary credentials).
    pub session_token: Option<SecretRef>,
}

/// When an entry's deliveries happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverySchedule {
    /// `every`: this long apart (never zero), the first one this long after the start.
    Every(Duration),
    /// `cron`: at the times of a cron expression, in UTC.
    Cron(CronSchedule),
}

/// A parsed cron expression (5 fields, or 6 with seconds first), evaluated in UTC.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    /// Boxed: a parsed pattern is a few hundred bytes, the other schedule 16.
    cron: Box<croner::Cron>,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl Eq for CronSchedule {}

impl CronSchedule {
    /// Parses `expression`; the error says what is wrong with it.
    pub fn parse(expression: &str) -> Result<CronSchedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| e.to_string())?;
        let schedule = CronSchedule {
            expression: expression.to_owned(),
            cron: Box::new(cron),
        };
        // An expression that never matches (e.g. February 30th) is no schedule.
        if schedule.next_after(SystemTime::now()).is_none() {
            return Err("it never matches".to_owned());
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first time after `now` the expression matches (UTC), if any.
    pub fn next_after(&self, now: SystemTime) -> Option<SystemTime> {
        let now: chrono::DateTime<chrono::Utc> = now.into();
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(next.into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cron_times_are_utc_with_optional_seconds_and_strictly_after_now() {
        // 2026-12-03T14:07:30Z.
        let now = at(1_796_306_850);
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        assert_eq!(hourly.next_after(now), Some(at(1_796_306_850 - 450 + 3600)));
        let on_the_hour = at(1_796_306_400);
        assert_eq!(
            hourly.next_after(on_the_hour),
            Some(at(1_796_306_400 + 3600)),
            "a time that matches is not its own next"
        );
        let every_5s = CronSchedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(every_5s.next_after(now), Some(at(1_796_306_855)));
        assert_eq!(every_5s.expression(), "*/5 * * * * *");
    }

    #[test]
    fn bad_cron_expressions_are_refused() {
        assert!(CronSchedule::parse("61 * * * *").is_err());
        assert!(CronSchedule::parse("every hour").is_err());
        assert!(CronSchedule::parse("0 0 30 2 *").is_err(), "never matches");
    }
}
