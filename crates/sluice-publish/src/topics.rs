//! Creating missing topics at start, so a fresh cluster without auto-creation does not leave
//! every delivery waiting. Best effort: failures are logged, the caller goes on (the mock
//! cluster has no CreateTopics API and relies on auto-creation).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Creates those of `topics` that do not exist yet (with the broker's defaults; `compacted` sets
/// `cleanup.policy=compact`).
pub async fn ensure_topics(kafka: &ClientConfig, topics: &[&str], compacted: bool) {
    let reader = kafka.clone();
    let wanted: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let missing = tokio::task::spawn_blocking(move || -> Vec<String> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let Ok(consumer) = reader.create::<BaseConsumer>() else {
            return Vec::new();
        };
        let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(10)) else {
            return Vec::new();
        };
        wanted
            .into_iter()
            .filter(|w| {
                !metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == w && t.error().is_none() && !t.partitions().is_empty())
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    for topic in missing {
        create_topic(kafka, &topic, compacted).await;
    }
}

/// Creates `topic` (compacted for checkpoints and snapshots), with the broker's default replication, or 1
/// where the broker does not take defaults.
pub async fn create_topic(kafka: &ClientConfig, topic: &str, compacted: bool) {
    let admin: AdminClient<DefaultClientContext> = match kafka.create() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::warn!(%error, "cannot create a kafka admin client");
            return;
        }
    };
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    for replication in [-1, 1] {
        let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(replication));
        if compacted {
            new = new.set("cleanup.policy", "compact");
        }
        match admin.create_topics([&new], &options).await {
            Ok(results) => {
                let failed = results.iter().find_map(|r| r.as_ref().err().cloned());
                match failed {
                    None => {
                        tracing::warn!(
                            topic,
                            compacted,
                            "created missing topic with 1 partition; create topics yourself to choose partitions and replication"
                        );
                        return;
                    }
                    Some((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => return,
                    Some((_, code)) => {
                        tracing::warn!(topic, replication, error = %code, "creating topic failed")
                    }
                }
            }
            Err(error) => tracing::warn!(topic, %error, "creating topic failed"),
        }
    }
}

/// The `cleanup.policy` of `topic` as the broker reports it (DescribeConfigs); `None` when the
/// broker cannot say (no DescribeConfigs API, as librdkafka's mock cluster, or an error): the
/// caller then cannot check and says so.
pub async fn cleanup_policy(kafka: &ClientConfig, topic: &str) -> Option<String> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = kafka.create().ok()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = match admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
    {
        Ok(results) => results,
        Err(error) => {
            tracing::debug!(topic, %error, "cannot describe the topic's configuration");
            return None;
        }
    };
    let resource = results.into_iter().next()?.ok()?;
    resource.get("cleanup.policy")?.value.clone()
}
