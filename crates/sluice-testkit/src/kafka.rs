//! A Kafka for tests: the broker named by `SLUICE_TEST_KAFKA`, else librdkafka's mock cluster.
//!
//! The mock cluster is in-process and speaks the Kafka protocol over loopback TCP (groups,
//! idempotence and transactions included), so the default `cargo test` needs nothing installed;
//! `scripts/test` starts Tansu and sets `SLUICE_TEST_KAFKA` so the same tests run against a real
//! broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaErrorCode;

/// The environment variable naming an external broker (`host:port[,host:port…]`).
pub const KAFKA_ENV: &str = "SLUICE_TEST_KAFKA";

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
        })
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Whether this is librdkafka's mock cluster rather than a real broker.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// The replication factor [`TestKafka::create_topic`] uses: every mock broker, or 1 for an
    /// external broker (a single-node Tansu).
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
            if compacted {
                topic = topic.set("cleanup.policy", "compact");
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

/// The mock cluster type [`TestKafka::with_mock`] hands to its closure.
pub type Mock = MockCluster<'static, DefaultProducerContext>;

/// Work to run on the thread that owns the mock cluster.
type MockJob = Box<dyn FnOnce(&Mock) + Send>;

/// The thread that owns a [`MockCluster`] (a raw handle that cannot leave the thread that made
/// it), runs jobs on it, and destroys it when the `TestKafka` drops.
#[derive(Debug)]
struct MockThread {
    jobs: Option<mpsc::Sender<MockJob>>,
    thread: Option<JoinHandle<()>>,
}

impl MockThread {
    fn start(brokers: i32) -> Result<(String, MockThread), TestKafkaError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<MockJob>();
        let thread = std::thread::Builder::new()
            .name("sluice-kafka-mock".to_owned())
            .spawn(move || match MockCluster::new(brokers) {
                Ok(cluster) => {
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    // Ends when the sender is dropped: the `TestKafka` is gone.
                    for job in jobs_rx {
                        job(&cluster);
                    }
                    drop(cluster);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| TestKafkaError::MockThread(e.to_string()))?;
        let mock = MockThread {
            jobs: Some(jobs_tx),
            thread: Some(thread),
        };
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| TestKafkaError::MockThread("exited before it was ready".to_owned()))??;
        Ok((bootstrap, mock))
    }

    /// Runs `f` on the mock cluster's thread and returns its result.
    fn run<R, F>(&self, f: F) -> Result<R, TestKafkaError>
    where
        R: Send + 'static,
        F: FnOnce(&Mock) -> R + Send + 'static,
    {
        let gone = || TestKafkaError::MockThread("mock cluster thread is gone".to_owned());
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: MockJob = Box::new(move |cluster| {
            let _ = reply_tx.send(f(cluster));
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())
    }
}

impl Drop for MockThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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

    /// The mock path stays covered in CI, where `SLUICE_TEST_KAFKA` points at Tansu.
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
