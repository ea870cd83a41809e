//! Validation of one target file, with the worker's defaults applied.
//!
//! What it must NOT do: I/O beyond reading the files the target names (secrets are checked to
//! exist, not read into the config), or accept a value it has not checked.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Validates one target file against the (already validated) worker.
pub(crate) fn target(
    file: &Path,
    raw: RawTarget,
    worker: &WorkerConfig,
    problems: &mut Vec<ConfigProblem>,
) -> Option<TargetConfig> {
    target_in(file, None, raw, worker, problems)
}

/// [`target`], with relative paths resolved in `base` when given (not in `file`'s directory).
pub(crate) fn target_in(
    file: &Path,
    base: Option<&Path>,
    raw: RawTarget,
    worker: &WorkerConfig,
    problems: &mut Vec<ConfigProblem>,
) -> Option<TargetConfig> {
    let mut c = Checker::new(file, problems);
    if let Some(base) = base {
        c = c.resolving_in(base);
    }
    let before = c.problems.len();

    let id = match raw.id.as_deref() {
        None => {
            c.report("id", ProblemKind::Missing, "missing target id".to_owned());
            None
        }
        Some(raw_id) => match raw_id.parse::<TargetId>() {
            Ok(id) => Some(id),
            Err(err) => {
                c.report("id", ProblemKind::BadTargetId, err.to_string());
                None
            }
        },
    };

    let url = match raw.url.as_deref() {
        None => {
            c.report("url", ProblemKind::Missing, "missing target url".to_owned());
            None
        }
        Some(raw_url) => c.http_url("url", raw_url),
    };

    let headers = c.headers("headers", &raw.headers);
    let method = c.method("method", raw.method.as_deref());
    let body = raw
        .body
        .as_ref()
        .and_then(|body| c.body("body", body, &method));

    let auth = Auth {
        bearer: raw
            .auth
            .bearer
            .as_ref()
            .and_then(|r| c.secret("auth.bearer", r)),
        cookie: raw
            .auth
            .cookie
            .as_ref()
            .and_then(|r| c.secret("auth.cookie", r)),
        oauth2: raw
            .auth
            .oauth2
            .as_ref()
            .and_then(|o| c.oauth2("auth.oauth2", o)),
    };
    if raw.auth.bearer.is_some() && raw.auth.oauth2.is_some() {
        c.report(
            "auth",
            ProblemKind::Invalid,
            "auth.bearer and auth.oauth2 both set the bearer token: keep one".to_owned(),
        );
    }

    let proxy = match &raw.proxy {
        None => None,
        Some(RawProxy {
            pool: Some(pool),
            url: None,
            password: None,
        }) => {
            if !worker.proxy_pools.contains_key(pool) {
                let known: Vec<&str> = worker.proxy_pools.keys().map(String::as_str).collect();
                c.report(
                    "proxy.pool",
                    ProblemKind::UnknownProxyPool,
                    format!(
                        "unknown proxy pool {pool:?} (defined in {}: {})",
                        worker.file.display(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            Some(TargetProxy::Pool(pool.clone()))
        }
        Some(raw_proxy @ RawProxy { pool: None, .. }) => c
            .proxy("proxy", raw_proxy)
            .map(|proxy| TargetProxy::Direct(Box::new(proxy))),
        Some(_) => {
            c.report(
                "proxy",
                ProblemKind::Malformed,
                "write either {url, password} or {pool: name}, not both".to_owned(),
            );
            None
        }
    };

    let root_certificates_pem = c.tls(&raw.tls);
    let client_identity = c.client_identity(&raw.tls);

    let d = &worker.defaults;
    let idle_timeout = c.duration("idle_timeout", raw.idle_timeout.as_deref(), d.idle_timeout);
    c.positive("idle_timeout", idle_timeout);
    let connect_timeout = c.duration(
        "connect_timeout",
        raw.connect_timeout.as_deref(),
        d.connect_timeout,
    );
    c.positive("connect_timeout", connect_timeout);
    let backoff = c.backoff("backoff", &raw.backoff, d.backoff);
    let max_connection_age = c
        .opt_duration("max_connection_age", raw.max_connection_age.as_deref())
        .or(d.max_connection_age);
    let limits = c.limits("limits", &raw.limits, d.limits);
    let topic = c.topic("topic", raw.topic.as_deref(), &worker.topics.events);

    let key = match &raw.key {
        None => RecordKey::Target,
        Some(RawKey::Named(name)) if name == "target" => RecordKey::Target,
        Some(RawKey::Named(name)) => {
            c.report(
                "key",
                ProblemKind::Invalid,
                format!("unknown key mode {name:?}: use target or {{pointer: \"/field\"}}"),
            );
            RecordKey::Target
        }
        Some(RawKey::Pointer(p)) => RecordKey::Pointer(c.pointer("key.pointer", &p.pointer)),
    };

    c.event_types("event_types", &raw.event_types);

    let aggregate = raw
        .aggregate
        .as_ref()
        .and_then(|agg| aggregate::aggregate(&mut c, agg, &key, &raw.event_types))
        .map(Box::new);

    let ok = c.problems.len() == before;
    Some(TargetConfig {
        id: id?,
        file: file.to_owned(),
        url: url?,
        headers,
        auth,
        proxy,
        root_certificates_pem,
        client_identity,
        idle_timeout,
        connect_timeout,
        backoff,
        max_connection_age,
        max_redirects: raw.max_redirects.unwrap_or(d.max_redirects),
        limits,
        topic,
        key,
        event_types: raw.event_types,
        enabled: raw.enabled.unwrap_or(true),
        cloudevents: raw.cloudevents.unwrap_or(false),
        compression: raw.compression.unwrap_or(true),
        method,
        body,
        aggregate,
    })
    .filter(|_| ok)
}
