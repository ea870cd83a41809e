//! `aggregator.yaml` into an [`AggregatorConfig`], the worker config it names loaded on the way
//! and checked to have something to aggregate.

use std::path::{Path, PathBuf};

use super::{CLIENT_MANAGED, Checker, Managed, PRODUCER_MANAGED, legal_kafka_name};
use crate::aggregator::{
    AggregatorConfig, AggregatorHttp, AggregatorKafka, AggregatorTopics, CorsOrigins, Routing,
    SnapshotConfig,
};
use crate::problem::{ConfigProblem, ProblemKind};
use crate::raw::RawAggregator;

/// Set by the aggregator's consumer: it stores an offset only once the delta is merged.
const CONSUMER_MANAGED: Managed = &[
    ("group.id", "set kafka.group_id instead"),
    (
        "group.instance.id",
        "set kafka.group_instance_id instead (or SLUICE__KAFKA__GROUP_INSTANCE_ID)",
    ),
    (
        "partition.assignment.strategy",
        "the aggregator uses cooperative-sticky, so a rebalance stops serving only the targets \
         that move",
    ),
    (
        "enable.auto.commit",
        "the aggregator commits offsets itself, after merging",
    ),
    (
        "enable.auto.offset.store",
        "the aggregator commits offsets itself, after merging",
    ),
];

/// Validates `aggregator.yaml` and loads the worker config it names (without environment
/// overrides: they belong to this file). `None` only with at least one problem reported.
pub(crate) fn aggregator(
    file: &Path,
    raw: RawAggregator,
    problems: &mut Vec<ConfigProblem>,
) -> Option<AggregatorConfig> {
    let mut c = Checker::new(file, problems);

    let worker_file = worker_file(&mut c, raw.worker.as_deref());
    let kafka = AggregatorKafka {
        brokers: c.brokers(&raw.kafka.brokers),
        client_id: c.name(
            "kafka.client_id",
            raw.kafka.client_id.as_deref(),
            AggregatorKafka::DEFAULT_CLIENT_ID,
        ),
        group_id: c.name(
            "kafka.group_id",
            raw.kafka.group_id.as_deref(),
            AggregatorKafka::DEFAULT_GROUP_ID,
        ),
        group_instance_id: raw
            .kafka
            .group_instance_id
            .as_deref()
            .map(|id| group_instance_id(&mut c, id)),
        secret_properties: c.kafka_secret_properties(
            &raw.kafka.secret_properties,
            &raw.kafka.properties,
            &[CLIENT_MANAGED, PRODUCER_MANAGED, CONSUMER_MANAGED],
        ),
        properties: raw.kafka.properties,
    };
    c.kafka_properties(
        &kafka.properties,
        &[CLIENT_MANAGED, PRODUCER_MANAGED, CONSUMER_MANAGED],
    );

    let state = c.topic(
        "topics.state",
        raw.topics.state.as_deref(),
        AggregatorTopics::DEFAULT_STATE,
    );
    let dead_letter = raw
        .topics
        .dead_letter
        .as_deref()
        .map(|topic| c.topic("topics.dead_letter", Some(topic), topic));
    if dead_letter.as_ref() == Some(&state) {
        c.report(
            "topics.dead_letter",
            ProblemKind::Invalid,
            format!("topic {state:?} is also topics.state: dead letters need a topic of their own"),
        );
    }
    let members = c.topic(
        "topics.members",
        raw.topics.members.as_deref(),
        AggregatorTopics::DEFAULT_MEMBERS,
    );
    if members == state || dead_letter.as_ref() == Some(&members) {
        c.report(
            "topics.members",
            ProblemKind::Invalid,
            format!("topic {members:?} is also topics.state or topics.dead_letter: members need a topic of their own"),
        );
    }
    let topics = AggregatorTopics {
        state,
        dead_letter,
        members,
    };

    let listen = c.listen(raw.http.listen.as_deref(), AggregatorConfig::DEFAULT_LISTEN);
    let max_connections = match raw.http.max_connections {
        None => AggregatorHttp::DEFAULT_MAX_CONNECTIONS,
        Some(0) => {
            c.report(
                "http.max_connections",
                ProblemKind::Invalid,
                "must be at least 1".to_owned(),
            );
            AggregatorHttp::DEFAULT_MAX_CONNECTIONS
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let bearer = raw
        .http
        .auth
        .bearer
        .as_ref()
        .and_then(|token| c.secret("http.auth.bearer", token));
    let cors = cors_origins(&mut c, &raw.http.cors.allowed_origins);
    let advertise = raw.http.advertise.as_deref().and_then(|text| match base_url(text) {
        Ok(url) => Some(url),
        Err(why) => {
            c.report(
                "http.advertise",
                ProblemKind::Invalid,
                // Not echoed when it holds credentials, which the message must not repeat.
                if text.contains('@') {
                    format!("not a base URL ({why}): write scheme://host[:port], e.g. http://aggregator-0.aggregators:9091")
                } else {
                    format!("{text:?} is not a base URL ({why}): write scheme://host[:port], e.g. http://aggregator-0.aggregators:9091")
                },
            );
            None
        }
    });
    let routing = match raw.http.routing.as_deref() {
        None | Some("redirect") => Routing::Redirect,
        Some("proxy") => Routing::Proxy,
        Some(word) => {
            c.report(
                "http.routing",
                ProblemKind::Invalid,
                format!("unknown routing {word:?} (expected redirect or proxy)"),
            );
            Routing::Redirect
        }
    };
    let http = AggregatorHttp {
        listen,
        max_connections,
        advertise,
        bearer,
        cors,
        routing,
    };

    let interval = c.duration(
        "snapshots.interval",
        raw.snapshots.interval.as_deref(),
        SnapshotConfig::DEFAULT_INTERVAL,
    );
    c.positive("snapshots.interval", interval);
    let dir = match raw.snapshots.dir.as_deref() {
        None => None,
        Some("") => {
            c.report(
                "snapshots.dir",
                ProblemKind::Missing,
                "empty snapshot directory: name one, relative to this file, or remove the key"
                    .to_owned(),
            );
            None
        }
        Some(dir) => Some(c.dir().join(dir)),
    };
    let snapshots = SnapshotConfig { interval, dir };
    let deliveries = super::delivery::deliveries(&mut c, raw.deliveries);
    let shutdown = c.shutdown(&raw.shutdown);
    let metrics = c.metrics(&raw.metrics);

    let worker = match crate::load_worker(&worker_file?, crate::load::read_file) {
        Ok(worker) => worker,
        Err(errors) => {
            problems.extend(errors.problems);
            return None;
        }
    };
    let mut c = Checker::new(file, problems);
    let config = AggregatorConfig {
        file: file.to_owned(),
        worker,
        kafka,
        topics,
        http,
        snapshots,
        deliveries: deliveries.iter().map(|(_, d)| d.clone()).collect(),
        shutdown,
        metrics,
    };
    check_targets(&mut c, &config);
    super::delivery::check_ids(&mut c, &config, &deliveries);
    Some(config)
}

/// `kafka.group_instance_id`: what Kafka accepts as a `group.instance.id` (a pod name does).
fn group_instance_id(c: &mut Checker<'_>, id: &str) -> String {
    if !legal_kafka_name(id) {
        c.report(
            "kafka.group_instance_id",
            ProblemKind::Invalid,
            format!(
                "bad group instance id {id:?}: use 1 to 249 of a-z A-Z 0-9 . _ - \
                 (a StatefulSet pod name, one per running aggregator)"
            ),
        );
    }
    id.to_owned()
}

/// The `worker` key: present, and naming a readable file (its own problems come from loading it).
fn worker_file(c: &mut Checker<'_>, raw: Option<&str>) -> Option<PathBuf> {
    let Some(name) = raw.filter(|name| !name.is_empty()) else {
        c.report(
            "worker",
            ProblemKind::Missing,
            "missing worker file: name the worker config whose targets to aggregate, relative \
             to this file"
                .to_owned(),
        );
        return None;
    };
    let path = c.dir().join(name);
    if let Err(err) = std::fs::metadata(&path) {
        c.report(
            "worker",
            ProblemKind::Unreadable,
            format!(
                "cannot read worker file {}: {}",
                path.display(),
                crate::load::lowercase_first(&err.to_string())
            ),
        );
        return None;
    }
    Some(path)
}

/// Something to aggregate, and the aggregator's own topics apart from every target's events topic
/// and from the worker's checkpoints.
fn check_targets(c: &mut Checker<'_>, config: &AggregatorConfig) {
    if config.targets().next().is_none() {
        c.report(
            "worker",
            ProblemKind::Missing,
            "no enabled target has an aggregate section".to_owned(),
        );
    }
    let own = [
        ("topics.state", Some(&config.topics.state)),
        ("topics.dead_letter", config.topics.dead_letter.as_ref()),
        ("topics.members", Some(&config.topics.members)),
    ];
    for (field, topic) in own {
        let Some(topic) = topic else {
            continue;
        };
        let clash = if *topic == config.worker.topics.checkpoints {
            Some("the worker's checkpoints topic".to_owned())
        } else {
            config
                .worker
                .targets
                .iter()
                .find(|target| target.topic == *topic)
                .map(|target| format!("the events topic of target {}", target.id))
        };
        if let Some(clash) = clash {
            c.report(
                field,
                ProblemKind::Invalid,
                format!("topic {topic:?} is {clash}: use a topic of its own"),
            );
        }
    }
}

/// `http.cors.allowed_origins`: `["*"]`, or origins as a browser sends them
/// (`scheme://host[:port]`, no path), normalised (lower-case host, default port dropped).
fn cors_origins(c: &mut Checker, origins: &[String]) -> CorsOrigins {
    const FIELD: &str = "http.cors.allowed_origins";
    if origins.is_empty() {
        return CorsOrigins::None;
    }
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            c.report(
                FIELD,
                ProblemKind::Invalid,
                "the entry \"*\" allows every origin: list it alone, or list origins without it"
                    .to_owned(),
            );
        }
        return CorsOrigins::Any;
    }
    let mut list = Vec::with_capacity(origins.len());
    for (index, origin) in origins.iter().enumerate() {
        match origin_of(origin) {
            Ok(origin) => list.push(origin),
            Err(why) => {
                // An entry with credentials in it is not echoed.
                let shown = if origin.contains('@') {
                    format!("entry {index}")
                } else {
                    format!("entry {index} ({origin:?})")
                };
                c.report(
                    FIELD,
                    ProblemKind::Invalid,
                    format!("{shown} is not an origin ({why}): write scheme://host[:port], e.g. https://app.example.com"),
                );
            }
        }
    }
    CorsOrigins::List(list)
}

/// `text` as a base URL (`scheme://host[:port]`, no trailing slash), or why it is none.
pub(super) fn base_url(text: &str) -> Result<String, &'static str> {
    if text.contains('@') {
        return Err("a base URL has no credentials");
    }
    origin_of(text)
}

/// The serialised origin of `text`, or why it is none.
fn origin_of(text: &str) -> Result<String, &'static str> {
    let url = url::Url::parse(text).map_err(|_| "not an absolute URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https");
    }
    if url.host_str().is_none() {
        return Err("no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("an origin has no credentials");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("an origin has no path, query or fragment");
    }
    Ok(url.origin().ascii_serialization())
}
