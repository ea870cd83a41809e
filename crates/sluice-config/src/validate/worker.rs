//! Validation of `worker.yaml`: Kafka, topics, HTTP, defaults, proxy pools and the target files
//! it names.
//!
//! What it must NOT do: I/O beyond reading the files the config names, or accept a value it has
//! not checked.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Validates `worker.yaml` (targets are added by the caller).
pub(crate) fn worker(
    file: &Path,
    raw: RawWorker,
    problems: &mut Vec<ConfigProblem>,
) -> WorkerConfig {
    let mut c = Checker::new(file, problems);

    let brokers = c.brokers(&raw.kafka.brokers);
    let client_id = c.name(
        "kafka.client_id",
        raw.kafka.client_id.as_deref(),
        KafkaConfig::DEFAULT_CLIENT_ID,
    );
    c.kafka_properties(&raw.kafka.properties, &[CLIENT_MANAGED, PRODUCER_MANAGED]);
    let secret_properties = c.kafka_secret_properties(
        &raw.kafka.secret_properties,
        &raw.kafka.properties,
        &[CLIENT_MANAGED, PRODUCER_MANAGED],
    );
    let kafka = KafkaConfig {
        brokers,
        client_id,
        properties: raw.kafka.properties,
        secret_properties,
    };

    let topics = Topics {
        events: c.topic(
            "topics.events",
            raw.topics.events.as_deref(),
            Topics::DEFAULT_EVENTS,
        ),
        checkpoints: c.topic(
            "topics.checkpoints",
            raw.topics.checkpoints.as_deref(),
            Topics::DEFAULT_CHECKPOINTS,
        ),
        targets: c.topic(
            "topics.targets",
            raw.topics.targets.as_deref(),
            Topics::DEFAULT_TARGETS,
        ),
    };

    let http = HttpConfig {
        listen: c.listen(raw.http.listen.as_deref(), HttpConfig::DEFAULT_LISTEN),
    };
    let targets_dir = c
        .dir()
        .join(raw.targets_dir.as_deref().unwrap_or("targets"));
    let targets_watch = c.duration(
        "targets_watch",
        raw.targets_watch.as_deref(),
        WorkerConfig::DEFAULT_TARGETS_WATCH,
    );
    let defaults = defaults(&mut c, &raw.defaults);

    let mut proxy_pools = BTreeMap::new();
    for (name, proxies) in &raw.proxy_pools {
        let field = format!("proxy_pools.{name}");
        if proxies.is_empty() {
            c.report(&field, ProblemKind::Missing, "empty proxy pool".to_owned());
        }
        let mut pool = Vec::new();
        for (i, raw_proxy) in proxies.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if raw_proxy.pool.is_some() {
                c.report(
                    &format!("{field}.pool"),
                    ProblemKind::Invalid,
                    "a pool member cannot refer to another pool".to_owned(),
                );
            }
            pool.extend(c.proxy(&field, raw_proxy));
        }
        proxy_pools.insert(name.clone(), pool);
    }

    let shutdown = c.shutdown(&raw.shutdown);
    let fleet = super::fleet::fleet(&mut c, raw.fleet.as_ref());
    let metrics = c.metrics(&raw.metrics);
    let admin = AdminConfig {
        token: raw
            .admin
            .token
            .as_ref()
            .and_then(|token| c.secret("admin.token", token)),
    };

    let delivery = guarantee(&mut c, &raw.delivery, &fleet);

    WorkerConfig {
        file: file.to_owned(),
        kafka,
        topics,
        http,
        targets_dir,
        targets_watch,
        defaults,
        proxy_pools,
        shutdown,
        fleet,
        metrics,
        admin,
        delivery,
        targets: Vec::new(),
    }
}

/// `delivery`: `mode` (`at_least_once`, `exactly_once`) and the transactions' settings.
fn guarantee(
    c: &mut Checker<'_>,
    raw: &crate::raw::RawGuarantee,
    fleet: &crate::Fleet,
) -> crate::DeliveryGuarantee {
    use crate::{DeliveryGuarantee, Transactions};
    let settings = raw.commit_interval.is_some()
        || raw.max_records.is_some()
        || raw.transaction_timeout.is_some();
    match raw.mode.as_deref() {
        None | Some("at_least_once") => {
            if settings {
                c.report(
                    "delivery.mode",
                    ProblemKind::Invalid,
                    "commit_interval, max_records and transaction_timeout apply to mode: \
                     exactly_once"
                        .to_owned(),
                );
            }
            DeliveryGuarantee::AtLeastOnce
        }
        Some("exactly_once") => {
            let d = Transactions::DEFAULT;
            let commit_interval = c.duration(
                "delivery.commit_interval",
                raw.commit_interval.as_deref(),
                d.commit_interval,
            );
            c.positive("delivery.commit_interval", commit_interval);
            let transaction_timeout = c.duration(
                "delivery.transaction_timeout",
                raw.transaction_timeout.as_deref(),
                d.transaction_timeout,
            );
            if transaction_timeout < std::time::Duration::from_secs(1)
                || transaction_timeout <= commit_interval * 2
            {
                c.report(
                    "delivery.transaction_timeout",
                    ProblemKind::Invalid,
                    "must be at least 1s and more than twice commit_interval".to_owned(),
                );
            }
            let max_records = match raw.max_records {
                None => d.max_records,
                Some(0) => {
                    c.report(
                        "delivery.max_records",
                        ProblemKind::Invalid,
                        "must be at least 1".to_owned(),
                    );
                    1
                }
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            };
            if matches!(fleet, crate::Fleet::Group(_)) {
                c.report(
                    "delivery.mode",
                    ProblemKind::Invalid,
                    "exactly_once runs with fleet: none for now (a fleet's handover is not \
                     transactional yet)"
                        .to_owned(),
                );
            }
            DeliveryGuarantee::ExactlyOnce(Transactions {
                commit_interval,
                max_records,
                transaction_timeout,
            })
        }
        Some(other) => {
            c.report(
                "delivery.mode",
                ProblemKind::Invalid,
                format!("unknown mode {other:?} (expected at_least_once or exactly_once)"),
            );
            DeliveryGuarantee::AtLeastOnce
        }
    }
}

fn defaults(c: &mut Checker<'_>, raw: &RawDefaults) -> Defaults {
    let base = Defaults::default();
    let defaults = Defaults {
        idle_timeout: c.duration(
            "defaults.idle_timeout",
            raw.idle_timeout.as_deref(),
            base.idle_timeout,
        ),
        connect_timeout: c.duration(
            "defaults.connect_timeout",
            raw.connect_timeout.as_deref(),
            base.connect_timeout,
        ),
        backoff: c.backoff("defaults.backoff", &raw.backoff, base.backoff),
        max_connection_age: c.opt_duration(
            "defaults.max_connection_age",
            raw.max_connection_age.as_deref(),
        ),
        max_redirects: raw.max_redirects.unwrap_or(base.max_redirects),
        limits: c.limits("defaults.limits", &raw.limits, base.limits),
        per_host_connections: raw
            .per_host_connections
            .unwrap_or(base.per_host_connections),
        streams_per_connection: raw
            .streams_per_connection
            .unwrap_or(base.streams_per_connection),
    };
    if defaults.streams_per_connection == 0 {
        c.report(
            "defaults.streams_per_connection",
            ProblemKind::Invalid,
            "must be at least 1".to_owned(),
        );
    }
    c.positive("defaults.idle_timeout", defaults.idle_timeout);
    c.positive("defaults.connect_timeout", defaults.connect_timeout);
    if defaults.per_host_connections == 0 {
        c.report(
            "defaults.per_host_connections",
            ProblemKind::Invalid,
            "must be at least 1".to_owned(),
        );
    }
    defaults
}
