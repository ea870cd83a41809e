//! Sluice's configuration: `worker.yaml` (Kafka, topics, HTTP, defaults, proxy pools) and one
//! `targets/*.yaml` per upstream (with an optional `aggregate` section), and `aggregator.yaml`
//! (which worker config to aggregate, Kafka, topics, HTTP, snapshots), read with the `config`
//! crate (`SLUICE__…` environment overrides for the file a process starts with), then validated
//! in one pass that reports every problem with its file and field, then built into domain types
//! ([`WorkerConfig`], [`TargetConfig`], [`AggregateConfig`], [`AggregatorConfig`], [`TargetId`])
//! that nothing downstream has to check again.
//!
//! Architecture invariant: this crate does no I/O beyond reading the config files, listing the
//! targets directory, checking that referenced secrets exist (env var set, file readable) and
//! reading the extra TLS root certificates a target names (`tls.ca_file`, kept as PEM bytes). It
//! opens no sockets and makes no connectivity checks. It never stores a secret's value in the
//! validated config, and no message or `Debug` output contains one.

mod aggregate;
mod aggregator;
mod definitions;
mod delivery;
mod fleet;
mod guarantee;
mod load;
mod metrics;
mod pagination;
mod problem;
mod proxy;
mod raw;
mod secret;
mod target;
mod validate;
mod worker;

use std::path::Path;

pub use aggregate::AggregateConfig;
pub use aggregator::{
    AggregatorConfig, AggregatorHttp, AggregatorKafka, AggregatorTopics, CorsOrigins, Loaded,
    Routing, SnapshotConfig,
};
pub use definitions::{
    TargetFile, read_target_file, read_target_files, target_file_paths, target_from_text,
};
pub use delivery::{
    Column, ColumnType, CronSchedule, DeliveryConfig, DeliveryFormat, DeliverySchedule,
    DeliveryTargets, Destination, S3Credentials, S3Destination,
};
pub use fleet::{Fleet, FleetGroup, GroupProtocol};
pub use guarantee::{DeliveryGuarantee, Transactions};
pub use load::{ENV_PREFIX, ENV_SEPARATOR};
pub use metrics::{FamilyInfo, MetricsConfig, PerTarget, PerTargetError};
pub use pagination::{PageMode, PageSize, Pagination};
pub use problem::{ConfigErrors, ConfigProblem, ProblemKind};
pub use proxy::ProxyConfig;
pub use secret::{Secret, SecretError, SecretRef};
pub use target::{
    Auth, BodySource, ClientIdentity, HeaderError, HeaderSource, OAuth2Config, RecordKey,
    RequestBody, TargetConfig, TargetId, TargetIdError, TargetProxy,
};
pub use validate::MAX_DURATION;
pub use worker::{
    AdminConfig, Backoff, Defaults, HttpConfig, KafkaConfig, ShutdownConfig, Topics, WorkerConfig,
};

/// Loads and validates `worker_yaml` (with `SLUICE__…` environment overrides) and every target
/// file in its `targets_dir`.
///
/// Returns every problem at once; `Ok` only when there is none.
pub fn load(worker_yaml: &Path) -> Result<WorkerConfig, ConfigErrors> {
    load_worker(worker_yaml, load::read_with_env)
}

/// Loads and validates `aggregator.yaml` (with `SLUICE__…` environment overrides) and the worker
/// config its `worker` key names (without overrides: the environment belongs to the aggregator's
/// file), which must have at least one enabled target with an `aggregate` section.
///
/// Returns every problem at once, the worker config's included; `Ok` only when there is none.
pub fn load_aggregator(aggregator_yaml: &Path) -> Result<AggregatorConfig, ConfigErrors> {
    let mut problems = Vec::new();
    let config = load::read_with_env(aggregator_yaml, &mut problems)
        .and_then(|raw| validate::aggregator(aggregator_yaml, raw, &mut problems));
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigErrors { problems }),
    }
}

/// Loads either kind of config file: an aggregator file (recognised by its top-level `worker`
/// key) with [`load_aggregator`], anything else with [`load`].
pub fn load_any(path: &Path) -> Result<Loaded, ConfigErrors> {
    if load::has_top_level_key(path, "worker") == Some(true) {
        load_aggregator(path).map(Loaded::Aggregator)
    } else {
        load(path).map(Loaded::Worker)
    }
}

/// How a worker file is read: with or without environment overrides.
type ReadWorker = fn(&Path, &mut Vec<ConfigProblem>) -> Option<raw::RawWorker>;

fn load_worker(worker_yaml: &Path, read: ReadWorker) -> Result<WorkerConfig, ConfigErrors> {
    let mut problems = Vec::new();
    let raw = read(worker_yaml, &mut problems);
    if problems.iter().any(|p| p.kind == ProblemKind::Unreadable) {
        // Without the file there is no targets directory to look in either.
        return Err(ConfigErrors { problems });
    }
    let worker_ok = raw.is_some();
    // A worker file that does not parse still lets the targets be checked, against the built-in
    // defaults; its own problems are already reported, so the placeholder's are dropped.
    let mut worker = if let Some(raw) = raw {
        validate::worker(worker_yaml, raw, &mut problems)
    } else {
        validate::worker(worker_yaml, raw::RawWorker::default(), &mut Vec::new())
    };

    let files = definitions::target_file_paths(&worker).unwrap_or_else(|problem| {
        problems.push(problem);
        Vec::new()
    });

    for file in definitions::validate_files(files, &worker, worker_ok) {
        match file.target {
            Ok(target) => worker.targets.push(target),
            Err(target_problems) => problems.extend(target_problems),
        }
    }
    worker.targets.sort_by(|a, b| a.id.cmp(&b.id));

    if problems.is_empty() {
        Ok(worker)
    } else {
        Err(ConfigErrors { problems })
    }
}
