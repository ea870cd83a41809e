//! Topic creation on a real Apache Kafka (the mock cluster has no CreateTopics API): a missing
//! topic is created with the broker's default replication factor, and a broker that refuses that
//! default gets no topic at all, never one with a replication factor of 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_publish::topics::{Created, create_topic};
use sluice_testkit::skip::current_test_name;
use sluice_testkit::{KafkaBroker, TestKafka, is_real_broker_run, skip_or_fail, unique_topic};

fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// The partitions' replica counts of `topic`, `None` when the broker does not list it.
fn replicas(config: &ClientConfig, topic: &str) -> Option<Vec<usize>> {
    let consumer: BaseConsumer = config.create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let entry = metadata.topics().iter().find(|t| t.name() == topic)?;
    if entry.error().is_some() || entry.partitions().is_empty() {
        return None;
    }
    Some(
        entry
            .partitions()
            .iter()
            .map(|p| p.replicas().len())
            .collect(),
    )
}

fn real_broker_run() -> bool {
    if !is_real_broker_run() {
        skip_or_fail(
            &current_test_name(),
            "needs a real Kafka broker (the mock cluster has no CreateTopics API): run scripts/test, or set SLUICE_TEST_KAFKA",
        );
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_created_once_with_the_broker_default_replication() {
    if !real_broker_run() {
        return;
    }
    let kafka = TestKafka::start().unwrap();
    let config = config(kafka.bootstrap());
    let topic = unique_topic("sluice-created");
    assert_eq!(
        create_topic(&config, &topic, true).await.unwrap(),
        Created::Created
    );
    assert_eq!(
        create_topic(&config, &topic, true).await.unwrap(),
        Created::AlreadyExists
    );
    // The shared broker is one node with default.replication.factor=1.
    assert_eq!(replicas(&config, &topic), Some(vec![1]));
}

/// A broker whose default replication factor (3) is above its node count (1) refuses the
/// topic: that is an error naming the fix, and no topic with a replication factor of 1 appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_its_default_replication_gets_no_topic_rather_than_one_replica() {
    if !real_broker_run() {
        return;
    }
    let broker = tokio::task::spawn_blocking(|| {
        let broker = KafkaBroker::start().expect("a private broker");
        broker.kill().unwrap();
        let properties = broker.dir().join("server.properties");
        let text = std::fs::read_to_string(&properties).unwrap();
        assert!(text.contains("default.replication.factor=1\n"));
        std::fs::write(
            &properties,
            text.replace(
                "default.replication.factor=1\n",
                "default.replication.factor=3\n",
            ),
        )
        .unwrap();
        broker.restart().unwrap();
        broker
    })
    .await
    .unwrap();
    let config = config(broker.bootstrap());
    let topic = unique_topic("sluice-refused");
    let error = create_topic(&config, &topic, false).await.unwrap_err();
    assert_eq!(error.kind(), "refused", "{error}");
    let message = error.to_string();
    assert!(message.contains(&topic), "{message}");
    assert!(message.contains("create the topic yourself"), "{message}");
    assert_eq!(replicas(&config, &topic), None, "no topic may be created");
    drop(config);
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
