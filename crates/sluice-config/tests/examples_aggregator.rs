//! The shipped `config/aggregator.yaml` loads with the worker config it names, and `load_any`
//! tells the two kinds of file apart.

#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_config::{AggregatorKafka, Loaded};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The only test in this binary: it sets env overrides, so no other thread reads the environment
/// meanwhile.
#[test]
fn shipped_aggregator_config_loads_and_env_overrides_apply_to_it_only() {
    let path = config_dir().join("aggregator.yaml");
    let config = sluice_config::load_aggregator(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.file, path);
    assert_eq!(config.worker.file, config_dir().join("worker.yaml"));
    assert_eq!(config.kafka.brokers, ["127.0.0.1:9092"]);
    assert_eq!(config.kafka.client_id, AggregatorKafka::DEFAULT_CLIENT_ID);
    assert_eq!(config.kafka.group_id, AggregatorKafka::DEFAULT_GROUP_ID);
    assert!(config.kafka.properties.is_empty());
    assert_eq!(
        config.kafka.group_instance_id, None,
        "a dynamic member unless set"
    );
    assert_eq!(config.topics.state, "sluice.state");
    assert_eq!(
        config.topics.dead_letter.as_deref(),
        Some("sluice.dead-letter")
    );
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9091");
    assert_eq!(config.http.max_connections, 1024);
    assert_eq!(config.snapshots.interval, Duration::from_secs(10));
    assert_eq!(config.snapshots.dir, None);
    assert!(
        config.deliveries.is_empty(),
        "the deliveries example is commented out"
    );
    assert_eq!(config.shutdown.grace, Duration::from_secs(25));
    let targets: Vec<&str> = config.targets().map(|(t, _)| t.id.as_str()).collect();
    assert_eq!(targets, ["sim-prices"]);
    assert_eq!(config.event_topics(), ["sluice.events"]);

    assert!(matches!(
        sluice_config::load_any(&path),
        Ok(Loaded::Aggregator(_))
    ));
    assert!(matches!(
        sluice_config::load_any(&config_dir().join("worker.yaml")),
        Ok(Loaded::Worker(_))
    ));

    // SAFETY: this is the only test in this test binary, so no other thread touches the environment.
    unsafe {
        std::env::set_var("SLUICE__KAFKA__GROUP_ID", "prices-aggregators");
        std::env::set_var("SLUICE__SNAPSHOTS__DIR", "snapshots");
        std::env::set_var("SLUICE__KAFKA__GROUP_INSTANCE_ID", "sluice-aggregator-1");
    }
    // A key only the aggregator has: applied to its file, and not an unknown key in the worker's.
    let config = sluice_config::load_aggregator(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.kafka.group_id, "prices-aggregators");
    assert_eq!(config.snapshots.dir, Some(config_dir().join("snapshots")));
    // A StatefulSet gives each pod its name here (the downward API): a stable group member.
    assert_eq!(
        config.kafka.group_instance_id.as_deref(),
        Some("sluice-aggregator-1")
    );
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("SLUICE__KAFKA__GROUP_ID");
        std::env::remove_var("SLUICE__SNAPSHOTS__DIR");
        std::env::remove_var("SLUICE__KAFKA__GROUP_INSTANCE_ID");
    }
}
