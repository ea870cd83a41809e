//! The Kafka side of the harness: librdkafka's mock cluster in its own process, a Tansu broker
//! or a given bootstrap, fresh topics, high-watermark polling and the latency consumer.

use std::io::{BufRead as _, Write as _};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::latency::{Latencies, latency_micros, scheduled_emit};

/// Brokers in the mock cluster (as in `sluice-testkit`).
pub const MOCK_BROKERS: i32 = 3;
/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `sluice-bench mock-kafka`: runs a mock cluster, prints its bootstrap servers, then serves
/// `create TOPIC PARTITIONS` lines on stdin (answering `ok` or `error: …`) until stdin closes.
pub fn run_mock_kafka(brokers: i32) -> anyhow::Result<()> {
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(brokers).context("cannot start the mock cluster")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", cluster.bootstrap_servers())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read stdin")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["create", topic, partitions] => match partitions.parse::<i32>() {
                Ok(partitions) => match cluster.create_topic(topic, partitions, brokers) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error: {e}"),
                },
                Err(e) => format!("error: partitions: {e}"),
            },
            [] => continue,
            _ => format!("error: unknown command {line:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

/// Where the implementations publish.
pub enum Kafka {
    /// The mock cluster in a child process of the harness.
    Mock {
        /// `bootstrap.servers`.
        bootstrap: String,
        /// The `mock-kafka` child (killed on drop).
        child: Child,
        /// Its command channel.
        stdin: ChildStdin,
        /// Its answers.
        stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    },
    /// A real broker (Tansu started by the harness, or one named on the command line).
    Broker {
        /// `bootstrap.servers`.
        bootstrap: String,
        /// Tansu started by the harness (killed on drop), with its data directory.
        tansu: Option<(Child, tempfile::TempDir)>,
        /// Tansu's storage engine, when the harness started it.
        storage: Option<String>,
    },
}

impl Kafka {
    /// Starts what `spec` names: `mock`, `tansu` (sqlite storage), `tansu-memory` (in-memory
    /// storage), or a bootstrap address.
    pub async fn start(spec: &str) -> anyhow::Result<Kafka> {
        match spec {
            "mock" => Kafka::mock().await,
            "tansu" => Kafka::tansu("sqlite://tansu.db").await,
            "tansu-memory" => Kafka::tansu("memory://tansu/").await,
            bootstrap => Ok(Kafka::Broker {
                bootstrap: bootstrap.to_owned(),
                tansu: None,
                storage: None,
            }),
        }
    }

    async fn mock() -> anyhow::Result<Kafka> {
        let exe = std::env::current_exe().context("cannot find the harness executable")?;
        let mut child = Command::new(exe)
            .arg("mock-kafka")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the mock-kafka child")?;
        let stdin = child.stdin.take().context("mock-kafka has no stdin")?;
        let stdout = child.stdout.take().context("mock-kafka has no stdout")?;
        let mut stdout = BufReader::new(stdout).lines();
        let bootstrap = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .context("mock-kafka did not print its bootstrap servers")??
            .context("mock-kafka exited before it was ready")?;
        Ok(Kafka::Mock {
            bootstrap,
            child,
            stdin,
            stdout,
        })
    }

    async fn tansu(storage: &str) -> anyhow::Result<Kafka> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-bench-tansu")
            .tempdir()
            .context("cannot create a temp dir for tansu")?;
        let port = crate::free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log"))
            .context("cannot create the tansu log")?;
        let tansu = std::env::var_os("HOME")
            .map(|home| std::path::Path::new(&home).join(".cargo/bin/tansu"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "tansu".into());
        // As scripts/test starts it (sqlite storage in the data dir), or in memory.
        let child = Command::new(tansu)
            .current_dir(dir.path())
            .args(["broker", "--cluster-id", "sluice-bench", "--listener-url"])
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .args(["--storage-engine", storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start tansu (is it in ~/.cargo/bin? scripts/test installs it)")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("tansu did not accept connections on port {port} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if storage.starts_with("sqlite:") {
            index_tansu_headers(&dir.path().join("tansu.db")).await;
        }
        Ok(Kafka::Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            tansu: Some((child, dir)),
            storage: Some(storage.to_owned()),
        })
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> &str {
        match self {
            Kafka::Mock { bootstrap, .. } | Kafka::Broker { bootstrap, .. } => bootstrap,
        }
    }

    /// The process id of the broker the harness started (mock or Tansu), for its CPU.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Kafka::Mock { child, .. } => child.id(),
            Kafka::Broker { tansu, .. } => tansu.as_ref().and_then(|(c, _)| c.id()),
        }
    }

    /// A short label for reports.
    pub fn label(&self) -> String {
        match self {
            Kafka::Mock { .. } => format!("librdkafka mock cluster ({MOCK_BROKERS} brokers)"),
            Kafka::Broker {
                tansu: Some(_),
                storage,
                ..
            } => format!("tansu ({} storage)", storage.as_deref().unwrap_or("?")),
            Kafka::Broker { bootstrap, .. } => format!("broker {bootstrap}"),
        }
    }

    /// Creates `topic` with `partitions` partitions (compacted on a real broker when asked) and
    /// waits until every partition has a leader.
    pub async fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        compacted: bool,
    ) -> anyhow::Result<()> {
        match self {
            Kafka::Mock { stdin, stdout, .. } => {
                stdin
                    .write_all(format!("create {topic} {partitions}\n").as_bytes())
                    .await
                    .context("cannot talk to mock-kafka")?;
                stdin.flush().await?;
                let answer = stdout
                    .next_line()
                    .await?
                    .context("mock-kafka exited while creating a topic")?;
                if answer != "ok" {
                    bail!("mock-kafka: creating {topic}: {answer}");
                }
            }
            Kafka::Broker { bootstrap, .. } => {
                let admin: AdminClient<DefaultClientContext> = base_config(bootstrap)
                    .create()
                    .context("cannot create an admin client")?;
                let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
                if compacted {
                    new = new.set("cleanup.policy", "compact");
                }
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                for result in admin.create_topics([&new], &opts).await? {
                    if let Err((topic, code)) = result {
                        bail!("creating topic {topic} failed: {code}");
                    }
                }
            }
        }
        let watcher = Watermarks::new(self.bootstrap(), topic, partitions)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let w = watcher.clone();
            if tokio::task::spawn_blocking(move || w.ready()).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("topic {topic} did not get leaders for all partitions within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A client config with `bootstrap.servers` and a `client.id`.
pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "sluice-bench");
    config
}

/// Sums the high watermarks of a topic's partitions (= records acknowledged into it).
#[derive(Clone)]
pub struct Watermarks {
    consumer: Arc<BaseConsumer>,
    topic: String,
    partitions: i32,
}

impl Watermarks {
    /// A metadata-only consumer for `topic`.
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Watermarks> {
        let consumer: BaseConsumer = base_config(bootstrap)
            .set("group.id", "sluice-bench-watermarks")
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create the watermark client")?;
        Ok(Watermarks {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// Whether every partition has a leader (blocking).
    pub fn ready(&self) -> bool {
        let Ok(metadata) = self
            .consumer
            .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)
        else {
            return false;
        };
        let expected = usize::try_from(self.partitions).unwrap_or_default();
        metadata.topics().iter().any(|t| {
            t.name() == self.topic
                && t.error().is_none()
                && t.partitions().len() == expected
                && t.partitions()
                    .iter()
                    .all(|p| p.error().is_none() && p.leader() >= 0)
        })
    }

    /// The sum of the partitions' high watermarks (blocking).
    pub fn sum(&self) -> anyhow::Result<u64> {
        let mut total = 0u64;
        for partition in 0..self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT)
                .with_context(|| format!("cannot fetch watermarks of {}", self.topic))?;
            total += u64::try_from(high).unwrap_or(0);
        }
        Ok(total)
    }

    /// [`Watermarks::sum`] off the async runtime.
    pub async fn sum_async(&self) -> anyhow::Result<u64> {
        let w = self.clone();
        tokio::task::spawn_blocking(move || w.sum()).await?
    }
}

/// A consumer thread that reads every record of a topic from the beginning and records, per
/// record, wall clock now minus the simulator's scheduled emit time of the event (`sse.id`).
pub struct LatencyConsumer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Latencies>>,
}

impl LatencyConsumer {
    /// Starts reading `topic` (all `partitions`, from the beginning) until `expected` records or
    /// [`LatencyConsumer::finish`].
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        sim_start: Arc<OnceLock<SystemTime>>,
        rate: f64,
        expected: u64,
    ) -> anyhow::Result<LatencyConsumer> {
        let consumer: BaseConsumer = base_config(bootstrap)
            .set("group.id", format!("sluice-bench-latency-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "1")
            .set("fetch.min.bytes", "1")
            .create()
            .context("cannot create the latency consumer")?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("latency-consumer".to_owned())
            .spawn(move || {
                let mut latencies = Latencies::default();
                let mut bad = 0u64;
                while !flag.load(Ordering::Relaxed) && latencies.len() + bad < expected {
                    let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let seen = SystemTime::now();
                    let message = message.context("latency consumer failed")?;
                    let seq = message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == "sse.id")
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<u64>().ok())
                    });
                    // Records exist only after the simulator started, so the start is set.
                    match seq.zip(sim_start.get()) {
                        Some((seq, start)) => latencies
                            .record(latency_micros(scheduled_emit(*start, seq, rate), seen)),
                        None => bad += 1,
                    }
                }
                if bad > 0 {
                    tracing::warn!(bad, "records without a numeric sse.id header");
                }
                Ok(latencies)
            })
            .context("cannot start the latency consumer thread")?;
        Ok(LatencyConsumer { stop, thread })
    }

    /// Waits up to `grace` for the consumer to read every expected record, then stops it
    /// (after its current poll) and returns what was recorded.
    pub async fn finish_within(self, grace: Duration) -> anyhow::Result<Latencies> {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.thread.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("latency consumer thread panicked"))?
    }
}

/// Adds the index Tansu 0.6's sqlite schema lacks (as `scripts/test` does): without it every
/// fetched record scans every header the broker holds, and consumers, not the implementations
/// measured, set the pace. Needs the `sqlite3` program; without it the run goes on, slower,
/// and says so.
async fn index_tansu_headers(db: &std::path::Path) {
    let status = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg("create index if not exists sluice_header_record on header (topition, offset_id);")
        .stdin(Stdio::null())
        .status()
        .await;
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!(
            "[kafka] indexing tansu's header table failed ({status}): Tansu fetches will be slow"
        ),
        Err(error) => eprintln!(
            "[kafka] cannot run sqlite3 to index tansu's header table ({error}): Tansu fetches will be slow"
        ),
    }
}
