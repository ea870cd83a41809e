//! Creating missing topics at start, so a fresh cluster without auto-creation does not leave
//! every delivery waiting. Best effort: failures are logged, the caller goes on (the mock
//! cluster has no CreateTopics API and relies on auto-creation).
//!
//! What it must NOT do: choose a replication factor itself. A topic is created with the
//! broker's default or not at all (a typed error naming the fix).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// Creates those of `topics` that do not exist yet (with the broker's defaults; `compacted` sets
/// `cleanup.policy=compact`).
pub async fn ensure_topics(kafka: &ClientConfig, topics: &[&str], compacted: bool) {
    ensure_topics_with(kafka, topics, compacted, &[]).await;
}

/// [`ensure_topics`], creating the missing ones with the topic configs in `configs` too (for
/// example `max.message.bytes`).
pub async fn ensure_topics_with(
    kafka: &ClientConfig,
    topics: &[&str],
    compacted: bool,
    configs: &[(&str, &str)],
) {
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
        // Logged by `create_topic`; the caller goes on (see the module doc).
        let _ = create_topic_with(kafka, &topic, compacted, configs).await;
    }
}

/// What [`create_topic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The topic was created.
    Created,
    /// It existed already.
    AlreadyExists,
}

/// Why [`create_topic`] did not create a topic.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    /// No admin client could be made from the config.
    #[error("cannot create a kafka admin client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    /// The CreateTopics request failed (no broker, timeout, no such API as on the mock cluster).
    #[error("creating topic {topic} failed: {source}")]
    Request {
        /// The topic's name.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker refused the topic, e.g. its default replication factor is above the number of
    /// brokers, or it does not take "the broker's default" at all (brokers before Kafka 2.4).
    /// Sluice never retries with a smaller replication factor: create the topic yourself.
    #[error(
        "the broker refused to create topic {topic} with its default replication factor: {code}; \
         create the topic yourself with the partitions and replication factor you want"
    )]
    Refused {
        /// The topic's name.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
}

impl CreateTopicError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CreateTopicError::Client(_) => "client",
            CreateTopicError::Request { .. } => "request",
            CreateTopicError::Refused { .. } => "refused",
        }
    }
}

/// Creates `topic` (compacted for checkpoints and snapshots) with 1 partition and the broker's
/// default replication factor (`default.replication.factor`), and nothing else: a broker that
/// refuses that is an error, never a silent fall back to a replication factor of 1 (one broker
/// lost would then lose the topic's data). Logged at warn (created) or error (refused).
pub async fn create_topic(
    kafka: &ClientConfig,
    topic: &str,
    compacted: bool,
) -> Result<Created, CreateTopicError> {
    create_topic_with(kafka, topic, compacted, &[]).await
}

/// [`create_topic`] with more topic configs (`(name, value)`).
pub async fn create_topic_with(
    kafka: &ClientConfig,
    topic: &str,
    compacted: bool,
    configs: &[(&str, &str)],
) -> Result<Created, CreateTopicError> {
    create_topic_partitioned(kafka, topic, 1, compacted, configs).await
}

/// Creates `topic` with `partitions` partitions (compacted or not, with more configs) and the
/// broker's default replication factor; an existing topic is left as it is.
pub async fn create_topic_partitioned(
    kafka: &ClientConfig,
    topic: &str,
    partitions: i32,
    compacted: bool,
    configs: &[(&str, &str)],
) -> Result<Created, CreateTopicError> {
    let result = try_create_topic(kafka, topic, partitions, compacted, configs).await;
    match &result {
        Ok(Created::Created) if partitions == 1 => tracing::warn!(
            topic,
            compacted,
            "created missing topic with 1 partition and the broker's default replication factor; \
             create topics yourself to choose partitions and replication"
        ),
        Ok(Created::Created) => tracing::info!(topic, partitions, compacted, "created topic"),
        Ok(Created::AlreadyExists) => {}
        Err(error) => tracing::error!(topic, kind = error.kind(), %error, "topic not created"),
    }
    result
}

/// The partition count of `topic`, from the broker's metadata.
pub async fn partition_count(
    kafka: &ClientConfig,
    topic: &str,
) -> Result<i32, crate::PartitionsError> {
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let metadata_error = |source| crate::PartitionsError::Metadata {
            topic: topic.clone(),
            source,
        };
        let consumer: BaseConsumer = kafka.create().map_err(metadata_error)?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .map_err(metadata_error)?;
        crate::partitions::count_in(&metadata, &topic)
    })
    .await;
    read.unwrap_or_else(|e| {
        Err(crate::PartitionsError::Metadata {
            topic: String::new(),
            source: rdkafka::error::KafkaError::Canceled,
        })
        .inspect_err(|_| tracing::error!(error = %e, "partition count reader task failed"))
    })
}

async fn try_create_topic(
    kafka: &ClientConfig,
    topic: &str,
    partitions: i32,
    compacted: bool,
    configs: &[(&str, &str)],
) -> Result<Created, CreateTopicError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.create().map_err(CreateTopicError::Client)?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(BROKER_DEFAULT));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    for (name, value) in configs {
        new = new.set(name, value);
    }
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|source| CreateTopicError::Request {
            topic: topic.to_owned(),
            source,
        })?;
    match results.iter().find_map(|r| r.as_ref().err()) {
        None => Ok(Created::Created),
        Some((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(Created::AlreadyExists),
        Some((_, code)) => Err(CreateTopicError::Refused {
            topic: topic.to_owned(),
            code: *code,
        }),
    }
}

/// The replication factor that asks for the broker's `default.replication.factor` (KIP-464).
const BROKER_DEFAULT: i32 = -1;

/// The `cleanup.policy` of `topic` as the broker reports it (DescribeConfigs); `None` when the
/// broker cannot say (no DescribeConfigs API, as librdkafka's mock cluster, or an error): the
/// caller then cannot check and says so.
pub async fn cleanup_policy(kafka: &ClientConfig, topic: &str) -> Option<String> {
    topic_config(kafka, topic, "cleanup.policy").await
}

/// The largest record batch `topic` takes (its `max.message.bytes`, the broker's default when
/// the topic does not set it), as the broker reports it; `None` when it cannot say, as for
/// [`cleanup_policy`].
pub async fn max_message_bytes(kafka: &ClientConfig, topic: &str) -> Option<u64> {
    let value = topic_config(kafka, topic, "max.message.bytes").await?;
    match value.trim().parse() {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            tracing::debug!(
                topic,
                value,
                "the topic's max.message.bytes is not a number"
            );
            None
        }
    }
}

/// The value of the topic config `name` of `topic` as the broker reports it (the broker's
/// default when the topic does not override it); `None` when the broker cannot say, as for
/// [`cleanup_policy`].
pub async fn topic_config(kafka: &ClientConfig, topic: &str, name: &str) -> Option<String> {
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
    resource.get(name)?.value.clone()
}
