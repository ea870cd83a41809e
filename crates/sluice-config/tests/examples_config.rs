//! The shipped `config/` directory loads, so the examples never rot.

#![allow(unsafe_code)]

use std::path::Path;

use sluice_config::{RecordKey, TargetProxy};
use sluice_merge::{MergeSpec, Strategy, VersionSpec};

/// The only test in this binary: it sets env overrides, so no other thread reads the environment
/// meanwhile.
#[test]
fn shipped_example_config_loads_and_env_overrides_apply() {
    let worker_yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/worker.yaml");
    let config = sluice_config::load(&worker_yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.targets.len(), 2);
    let sim = &config.targets[1];
    assert_eq!(sim.id.as_str(), "sim-prices");
    assert_eq!(sim.url.as_str(), "http://127.0.0.1:8080/v1/stream");
    assert_eq!(sim.key, RecordKey::Target);
    assert!(sim.enabled);
    let aggregate = sim.aggregate.as_ref().expect("sim-prices is aggregated");
    assert_eq!(
        aggregate.base_url.as_str(),
        "http://127.0.0.1:8080/v1/snapshot"
    );
    assert_eq!(aggregate.base_timeout, std::time::Duration::from_secs(10));
    assert_eq!(
        aggregate.spec,
        MergeSpec {
            base_items: "/items".to_owned(),
            base_key: "/key".to_owned(),
            base_version: Some("/version".to_owned()),
            key: "/key".to_owned(),
            value: None,
            version: VersionSpec::Single("/version".to_owned()),
            contiguous: true,
            strategy: Strategy::Replace,
            delete_events: vec!["delete".to_owned()],
            ignore_events: Vec::new(),
            reset_events: vec!["reset".to_owned()],
            max_buffered: MergeSpec::DEFAULT_MAX_BUFFERED,
            dedupe_window: MergeSpec::DEFAULT_DEDUPE_WINDOW,
            max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
            max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
            limits: Default::default(),
        }
    );
    let base_headers = aggregate.resolve_base_headers().expect("plain headers");
    assert_eq!(base_headers["accept"], "application/json");
    let pooled = &config.targets[0];
    assert!(pooled.aggregate.is_none());
    assert_eq!(
        pooled.proxy,
        Some(TargetProxy::Pool("example-pool".to_owned()))
    );
    let pool = &config.proxy_pools["example-pool"];
    let secret_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/secrets/example-proxy-password");
    let expected = std::fs::read_to_string(secret_file).expect("example secret file");
    let url = pool[0].resolve_url().expect("example password file exists");
    assert_eq!(url.password(), Some(expected.trim()));
    assert!(!format!("{config:?}").contains(expected.trim()));
    assert!(!format!("{config:?}").contains("not-a-real"));
    assert_eq!(config.kafka.properties["linger.ms"], "5");

    // SAFETY: this is the only test in this test binary, so no other thread touches the environment.
    unsafe {
        std::env::set_var("SLUICE__KAFKA__BROKERS", "k1:9092,k2:9092");
        std::env::set_var("SLUICE__SHUTDOWN__GRACE", "40s");
    }
    let config = sluice_config::load(&worker_yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.kafka.brokers, ["k1:9092", "k2:9092"]);
    assert_eq!(config.shutdown.grace, std::time::Duration::from_secs(40));
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("SLUICE__KAFKA__BROKERS");
        std::env::remove_var("SLUICE__SHUTDOWN__GRACE");
    }
}
