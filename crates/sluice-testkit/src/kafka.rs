//! A Kafka for tests: the broker named by `SLUICE_TEST_KAFKA`, else librdkafka's mock cluster.
//!
//! The mock cluster is in-process and speaks the Kafka protocol over loopback TCP (groups,
//! idempotence and transactions included, fencing and read_committed not fully), so the default
//! `cargo test` needs nothing installed; `scripts/test` starts a real Apache Kafka (`scripts/kafka`)
//! and sets `SLUICE_TEST_KAFKA` so the same tests run against the broker users run.
//!
//! A test that stops the broker takes [`TestKafka::private`]: a broker of its own (a private
//! Apache Kafka under `scripts/test`, the mock otherwise) with [`TestKafka::broker_down`] and
//! [`TestKafka::broker_up`] as the fault, never the shared broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::broker::{KafkaBroker, SaslListener};
pub use crate::mock::Mock;
use crate::mock::MockThread;

/// The environment variable naming an external broker (`host:port[,host:port…]`).
pub const KAFKA_ENV: &str = "SLUICE_TEST_KAFKA";
/// The environment variable naming the shared broker's `scripts/kafka` directory (its SASL
/// listener and user), set by `scripts/test`.
pub const KAFKA_DIR_ENV: &str = "SLUICE_TEST_KAFKA_DIR";

/// Whether this run tests against a real broker (`SLUICE_TEST_KAFKA` set and not empty).
pub fn is_real_broker_run() -> bool {
    std::env::var(KAFKA_ENV).is_ok_and(|v| !v.trim().is_empty())
}

/// How many brokers the mock cluster has.
const MOCK_BROKERS: i32 = 3;
/// How many times topic metadata is polled after creation before giving up.
const METADATA_ATTEMPTS: u32 = 100;
/// How long each metadata poll may wait for the broker.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between metadata polls that found the topic not ready yet.
const METADATA_INTERVAL: Duration = Duration::from_millis(100);
/// How long the broker may take to create a topic.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a test Kafka could not be provided or used.
#[derive(Debug, thiserror::Error)]
pub enum TestKafkaError {
    /// A Kafka client call failed.
    #[error("kafka client failed: {0}")]
    Kafka(#[from] KafkaError),
    /// The thread that owns the mock cluster could not start or died.
    #[error("mock cluster thread failed: {0}")]
    MockThread(String),
    /// The broker refused to create a topic.
    #[error("creating topic {topic} failed: {code}")]
    CreateTopic {
        /// The topic's name.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The broker refused to change a topic's config.
    #[error("changing the config of topic {topic} failed: {code}")]
    AlterConfig {
        /// The topic's name.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A private broker could not be started, stopped or read.
    #[error("private kafka broker: {0}")]
    Broker(String),
    /// The topic was created but its partitions never all had a leader.
    #[error("topic {topic} did not become ready")]
    TopicNotReady {
        /// The topic's name.
        topic: String,
    },
}

impl TestKafkaError {
    /// A bounded label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            TestKafkaError::Kafka(_) => "kafka",
            TestKafkaError::MockThread(_) => "mock_thread",
            TestKafkaError::CreateTopic { .. } => "create_topic",
            TestKafkaError::AlterConfig { .. } => "alter_config",
            TestKafkaError::Broker(_) => "broker",
            TestKafkaError::TopicNotReady { .. } => "topic_not_ready",
        }
    }
}

/// A Kafka cluster for one test (or a group of tests), alive as long as this value.
///
/// Drop the clients made from it before it, so they do not log errors about a vanished mock
/// cluster (declaring it first in the test does that).
#[derive(Debug)]
pub struct TestKafka {
    bootstrap: String,
    mock: Option<MockThread>,
    private: Option<Arc<KafkaBroker>>,
}

/// How [`TestKafka::broker_down`] takes the broker away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The broker hangs: SIGSTOP, sockets open, nothing answers (a real broker), or every mock
    /// broker down.
    Pause,
    /// The broker crashes: SIGKILL, connections refused until it is restarted on the same log
    /// dirs and ports (a real broker), or every mock broker down.
    Kill,
}

impl Outage {
    /// A bounded label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outage::Pause => "pause",
            Outage::Kill => "kill",
        }
    }
}

impl TestKafka {
    /// The broker named by `SLUICE_TEST_KAFKA` when set and not empty, else a new mock cluster.
    pub fn start() -> Result<TestKafka, TestKafkaError> {
        match std::env::var(KAFKA_ENV) {
            Ok(bootstrap) if !bootstrap.trim().is_empty() => {
                tracing::debug!(bootstrap, "using external test kafka");
                Ok(TestKafka {
                    bootstrap: bootstrap.trim().to_owned(),
                    mock: None,
                    private: None,
                })
            }
            _ => TestKafka::mock(),
        }
    }

    /// A new mock cluster of three brokers, whatever `SLUICE_TEST_KAFKA` says.
    pub fn mock() -> Result<TestKafka, TestKafkaError> {
        let (bootstrap, mock) = MockThread::start(MOCK_BROKERS)?;
        tracing::debug!(bootstrap, "started kafka mock cluster");
        Ok(TestKafka {
            bootstrap,
            mock: Some(mock),
            private: None,
        })
    }

    /// A broker this test owns and may take down: a private Apache Kafka when the run has a real
    /// broker (`SLUICE_TEST_KAFKA` set, as under `scripts/test`), else a new mock cluster.
    pub fn private() -> Result<TestKafka, TestKafkaError> {
        if !is_real_broker_run() {
            return TestKafka::mock();
        }
        let broker = KafkaBroker::start()?;
        Ok(TestKafka {
            bootstrap: broker.bootstrap().to_owned(),
            mock: None,
            private: Some(Arc::new(broker)),
        })
    }

    /// A private Apache Kafka that enforces ACLs (the SASL user may do nothing until
    /// [`TestKafka::grant_sasl_user_everything`]); only in a real-broker run (`None` otherwise:
    /// the mock has no authorizer).
    pub fn private_with_acls() -> Option<Result<TestKafka, TestKafkaError>> {
        if !is_real_broker_run() {
            return None;
        }
        Some(KafkaBroker::start_with(true).map(|broker| TestKafka {
            bootstrap: broker.bootstrap().to_owned(),
            mock: None,
            private: Some(Arc::new(broker)),
        }))
    }

    /// Grants the SASL user everything on a private broker with ACLs.
    pub async fn grant_sasl_user_everything(&self) -> Result<(), TestKafkaError> {
        self.on_broker(KafkaBroker::grant_sasl_user_everything)
            .await
    }

    /// Adds one ACL for the SASL user on a private broker with ACLs
    /// ([`KafkaBroker::grant_sasl_user`]).
    pub async fn grant_sasl_user(&self, acl: &[&str]) -> Result<(), TestKafkaError> {
        let acl: Vec<String> = acl.iter().map(|a| (*a).to_owned()).collect();
        self.on_broker(move |broker| {
            let acl: Vec<&str> = acl.iter().map(String::as_str).collect();
            broker.grant_sasl_user(&acl)
        })
        .await
    }

    /// Runs a blocking call on the private broker off the async runtime.
    async fn on_broker<R, F>(&self, call: F) -> Result<R, TestKafkaError>
    where
        R: Send + 'static,
        F: FnOnce(&KafkaBroker) -> Result<R, TestKafkaError> + Send + 'static,
    {
        let broker = Arc::clone(self.owned_broker()?);
        tokio::task::spawn_blocking(move || call(&broker))
            .await
            .map_err(|e| TestKafkaError::Broker(format!("broker task: {e}")))?
    }

    /// Takes the broker away (every broker of the mock cluster, or the private broker as
    /// `outage` says) until [`TestKafka::broker_up`].
    ///
    /// Fails on the shared external broker: a test must not stop what the others use.
    pub async fn broker_down(&self, outage: Outage) -> Result<(), TestKafkaError> {
        tracing::info!(outage = outage.as_str(), "test kafka going down");
        if self.mock.is_some() {
            return self.mock_brokers(false);
        }
        let broker = self.owned_broker()?;
        match outage {
            Outage::Pause => broker.pause(),
            Outage::Kill => broker.kill(),
        }
    }

    /// Brings the broker back after [`TestKafka::broker_down`]; for a real broker, returns once
    /// it answers a metadata request.
    pub async fn broker_up(&self, outage: Outage) -> Result<(), TestKafkaError> {
        tracing::info!(outage = outage.as_str(), "test kafka coming back");
        if self.mock.is_some() {
            return self.mock_brokers(true);
        }
        let broker = self.owned_broker()?;
        match outage {
            Outage::Pause => broker.resume(),
            Outage::Kill => self.on_broker(KafkaBroker::restart).await,
        }
    }

    /// The private broker's log tail (empty for the mock or an external broker).
    pub fn broker_log_tail(&self, lines: usize) -> String {
        self.private
            .as_ref()
            .map(|b| b.log_tail(lines))
            .unwrap_or_default()
    }

    /// The SASL_PLAINTEXT listener of a broker `scripts/kafka` started: the private one, or the
    /// shared one named by `SLUICE_TEST_KAFKA_DIR`; `None` for the mock or a broker from
    /// elsewhere.
    pub fn sasl(&self) -> Option<Result<SaslListener, TestKafkaError>> {
        if let Some(broker) = &self.private {
            return Some(broker.sasl());
        }
        if self.mock.is_some() {
            return None;
        }
        let dir = std::env::var_os(KAFKA_DIR_ENV).filter(|d| !d.is_empty())?;
        Some(SaslListener::from_dir(std::path::Path::new(&dir)))
    }

    fn owned_broker(&self) -> Result<&Arc<KafkaBroker>, TestKafkaError> {
        self.private.as_ref().ok_or_else(|| {
            TestKafkaError::Broker(
                "only a private broker (TestKafka::private) or the mock may be taken down"
                    .to_owned(),
            )
        })
    }

    fn mock_brokers(&self, up: bool) -> Result<(), TestKafkaError> {
        let result = self.with_mock(move |mock| {
            (1..=MOCK_BROKERS).try_for_each(|broker| {
                if up {
                    mock.broker_up(broker)
                } else {
                    mock.broker_down(broker)
                }
            })
        });
        match result {
            Some(result) => Ok(result??),
            None => Err(TestKafkaError::MockThread("no mock cluster".to_owned())),
        }
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Whether this is a broker of its own that the test may take down.
    pub fn is_private(&self) -> bool {
        self.mock.is_some() || self.private.is_some()
    }

    /// Whether this is librdkafka's mock cluster rather than a real broker.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// The replication factor [`TestKafka::create_topic`] uses: every mock broker, or 1 for an
    /// real broker (a single node).
    pub fn replication_factor(&self) -> i32 {
        if self.is_mock() { MOCK_BROKERS } else { 1 }
    }

    /// Creates `name` with `partitions` partitions (`cleanup.policy=compact` when `compacted`)
    /// and waits until every partition has a leader.
    ///
    /// The mock cluster has no CreateTopics API, so there the topic is made through the mock's
    /// own call, and `compacted` is ignored (the mock never cleans up logs anyway).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        compacted: bool,
    ) -> Result<(), TestKafkaError> {
        let config: &[(&str, &str)] = if compacted {
            &[("cleanup.policy", "compact")]
        } else {
            &[]
        };
        self.create_topic_with(name, partitions, config).await
    }

    /// Creates `name` with `partitions` partitions and the topic `config` (e.g. a short
    /// `retention.ms` for a test that proves retention) and waits until every partition has a
    /// leader. The mock cluster ignores `config`.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        config: &[(&str, &str)],
    ) -> Result<(), TestKafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base_config().create()?;
        if let Some(mock) = &self.mock {
            let topic = name.to_owned();
            let replication = self.replication_factor();
            mock.run(move |cluster| cluster.create_topic(&topic, partitions, replication))??;
        } else {
            let mut topic = NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(self.replication_factor()),
            );
            for (key, value) in config {
                topic = topic.set(key, value);
            }
            let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
            for result in admin.create_topics([&topic], &opts).await? {
                if let Err((topic, code)) = result {
                    return Err(TestKafkaError::CreateTopic { topic, code });
                }
            }
        }
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || wait_for_leaders(&admin, &name, partitions))
            .await
            .map_err(|e| TestKafkaError::MockThread(e.to_string()))?
    }

    /// Sets the topic `config` of `name` (a real broker's AlterConfigs: the topic's other
    /// overrides go back to the broker's defaults). The mock cluster has no such API and
    /// ignores it.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        config: &[(&str, &str)],
    ) -> Result<(), TestKafkaError> {
        use rdkafka::admin::{AlterConfig, ResourceSpecifier};
        if self.mock.is_some() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.base_config().create()?;
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
        for (key, value) in config {
            alter = alter.set(key, value);
        }
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        for result in admin.alter_configs([&alter], &opts).await? {
            if let Err((_, code)) = result {
                return Err(TestKafkaError::AlterConfig {
                    topic: name.to_owned(),
                    code,
                });
            }
        }
        Ok(())
    }

    /// Runs `f` with the mock cluster (for fault injection: `broker_down`, `request_errors`,
    /// `partition_leader` …) on the thread that owns it; `None` when this is a real broker.
    ///
    /// ```no_run
    /// # let kafka = sluice_testkit::TestKafka::mock()?;
    /// kafka.with_mock(|mock| mock.broker_down(1)).transpose()?;
    /// # Ok::<(), sluice_testkit::TestKafkaError>(())
    /// ```
    pub fn with_mock<R, F>(&self, f: F) -> Option<Result<R, TestKafkaError>>
    where
        R: Send + 'static,
        F: FnOnce(&Mock) -> R + Send + 'static,
    {
        self.mock.as_ref().map(|mock| mock.run(f))
    }

    /// A producer config with `bootstrap.servers` set; the test adds what it is testing.
    pub fn producer_config(&self) -> ClientConfig {
        self.base_config()
    }

    /// A consumer config for `group` with `bootstrap.servers` set, reading from the earliest
    /// offset when the group has none, and with auto-commit off.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        config
    }

    fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "sluice-test");
        config
    }
}

/// A topic (or group) name unique to this call: `prefix-PID-COUNTER-NANOS`.
pub fn unique_topic(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Polls metadata until `topic` has `partitions` partitions, each with a leader and no error.
fn wait_for_leaders(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
) -> Result<(), TestKafkaError> {
    let expected = usize::try_from(partitions).unwrap_or_default();
    for _ in 0..METADATA_ATTEMPTS {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let ready = metadata.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().len() == expected
                && t.partitions()
                    .iter()
                    .all(|p| p.error().is_none() && p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        std::thread::sleep(METADATA_INTERVAL);
    }
    Err(TestKafkaError::TopicNotReady {
        topic: topic.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    use super::*;

    #[test]
    fn unique_topics_differ_and_keep_the_prefix() {
        let a = unique_topic("smoke");
        let b = unique_topic("smoke");
        assert_ne!(a, b);
        assert!(a.starts_with("smoke-"));
    }

    #[test]
    fn mock_cluster_is_used_even_when_an_external_broker_is_named() {
        let kafka = TestKafka::mock().unwrap();
        assert!(kafka.is_mock());
        assert!(kafka.bootstrap().contains("127.0.0.1") || kafka.bootstrap().contains("localhost"));
    }

    #[test]
    fn with_mock_runs_on_the_mock_cluster_and_only_there() {
        let kafka = TestKafka::mock().unwrap();
        let bootstrap = kafka.with_mock(|mock| mock.bootstrap_servers()).unwrap();
        assert_eq!(bootstrap.unwrap(), kafka.bootstrap());
        let external = TestKafka {
            bootstrap: "127.0.0.1:1".to_owned(),
            mock: None,
            private: None,
        };
        assert!(external.with_mock(|_| ()).is_none());
    }

    #[test]
    fn error_kinds_are_bounded_labels() {
        let err = TestKafkaError::TopicNotReady {
            topic: "t".to_owned(),
        };
        assert_eq!(err.kind(), "topic_not_ready");
    }

    /// The mock path stays covered in CI, where `SLUICE_TEST_KAFKA` points at a real broker.
    #[tokio::test]
    async fn mock_cluster_round_trips_a_record_with_headers_through_a_group() {
        let kafka = TestKafka::mock().unwrap();
        let topic = unique_topic("testkit-mock");
        kafka.create_topic(&topic, 2, false).await.unwrap();

        let producer: FutureProducer = kafka
            .producer_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let headers = OwnedHeaders::new().insert(Header {
            key: "sse.id",
            value: Some("42"),
        });
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("target-a")
                    .payload("{\"price\":1}")
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();

        let consumer: StreamConsumer = kafka
            .consumer_config(&unique_topic("testkit-group"))
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a record within a minute")
            .unwrap();
        assert_eq!(message.key(), Some(&b"target-a"[..]));
        assert_eq!(message.payload(), Some(&b"{\"price\":1}"[..]));
        let header = message.headers().unwrap().get(0);
        assert_eq!(header.key, "sse.id");
        assert_eq!(header.value, Some(&b"42"[..]));
    }

    #[tokio::test]
    async fn mock_cluster_creates_compacted_topics() {
        let kafka = TestKafka::mock().unwrap();
        let topic = unique_topic("testkit-compacted");
        kafka.create_topic(&topic, 1, true).await.unwrap();
    }
}
