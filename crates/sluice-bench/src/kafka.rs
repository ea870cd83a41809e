//! The Kafka side of the harness: librdkafka's mock cluster in its own process, a real Apache
//! Kafka started by `scripts/kafka` (single KRaft node, a process of its own) or a given
//! bootstrap, fresh topics, high-watermark polling and the latency consumer.

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
// One value per run: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// A real broker (Apache Kafka started by the harness, or one named on the command line).
    Broker {
        /// `bootstrap.servers`.
        bootstrap: String,
        /// The broker the harness started (stopped and removed on drop).
        started: Option<StartedBroker>,
    },
}

/// An Apache Kafka the harness started with `scripts/kafka start` in a temp dir.
pub struct StartedBroker {
    script: std::path::PathBuf,
    pid: u32,
    dir: tempfile::TempDir,
}

impl Drop for StartedBroker {
    fn drop(&mut self) {
        let status = std::process::Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("[kafka] stopping the broker (pid {}) failed", self.pid);
        }
    }
}

impl Kafka {
    /// Starts what `spec` names: `mock`, `real` (Apache Kafka via `scripts/kafka`), or a
    /// bootstrap address.
    pub async fn start(spec: &str) -> anyhow::Result<Kafka> {
        match spec {
            "mock" => Kafka::mock().await,
            "real" => Kafka::real().await,
            bootstrap => Ok(Kafka::Broker {
                bootstrap: bootstrap.to_owned(),
                started: None,
            }),
        }
    }

    /// For a broker the harness started: warms the JVM up before anything is measured. The
    /// first implementation measured on a cold broker paid its JIT compilation (p99 latency
    /// 172 ms against 18 ms for the one after it, on the same broker). Writes
    /// [`WARM_UP_RECORDS`] records with acks=all and idempotence to a topic of its own and reads
    /// them back, so both the produce and the fetch paths are compiled.
    pub async fn warm_up(&mut self) -> anyhow::Result<()> {
        if !matches!(
            self,
            Kafka::Broker {
                started: Some(_),
                ..
            }
        ) {
            return Ok(());
        }
        let topic = format!("sluice-bench-warm-up-{}", std::process::id());
        self.create_topic(&topic, 3, false).await?;
        let bootstrap = self.bootstrap().to_owned();
        let started = tokio::time::Instant::now();
        tokio::task::spawn_blocking(move || warm_up_blocking(&bootstrap, &topic)).await??;
        eprintln!(
            "[kafka] broker warmed up: {WARM_UP_RECORDS} records written and read in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
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

    /// A single-node Apache Kafka, as the tests run it: `scripts/kafka start` (fetches the pinned
    /// release from Maven Central once; `SLUICE_KAFKA_SCRIPT` names another copy of the script,
    /// `SLUICE_KAFKA_HEAP` its heap).
    async fn real() -> anyhow::Result<Kafka> {
        let script = std::env::var_os("SLUICE_KAFKA_SCRIPT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka")
            });
        let dir = tempfile::Builder::new()
            .prefix("sluice-bench-kafka")
            .tempdir()
            .context("cannot create a temp dir for the broker")?;
        let output = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .with_context(|| format!("cannot run {}", script.display()))?;
        let said = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "{} start failed ({}):\n{said}",
                script.display(),
                output.status
            );
        }
        eprint!("{said}");
        let bootstrap = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let pid = std::fs::read_to_string(dir.path().join("broker.pid"))
            .context("the broker wrote no pid")?
            .trim()
            .parse()
            .context("the broker's pid file holds no number")?;
        Ok(Kafka::Broker {
            bootstrap,
            started: Some(StartedBroker { script, pid, dir }),
        })
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> &str {
        match self {
            Kafka::Mock { bootstrap, .. } | Kafka::Broker { bootstrap, .. } => bootstrap,
        }
    }

    /// The process id of the broker the harness started (mock or Apache Kafka), for its CPU.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Kafka::Mock { child, .. } => child.id(),
            Kafka::Broker { started, .. } => started.as_ref().map(|b| b.pid),
        }
    }

    /// A short label for reports.
    pub fn label(&self) -> String {
        match self {
            Kafka::Mock { .. } => format!("librdkafka mock cluster ({MOCK_BROKERS} brokers)"),
            Kafka::Broker {
                started: Some(_), ..
            } => "Apache Kafka (scripts/kafka, one KRaft node)".to_owned(),
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
                // An events topic takes every event the workers' default parser limits accept
                // (the worker refuses to start otherwise), as one the worker creates would.
                let max_message =
                    sluice_publish::max_record_bytes(sluice_sse::Limits::default()).to_string();
                if compacted {
                    new = new.set("cleanup.policy", "compact");
                } else {
                    new = new.set("max.message.bytes", &max_message);
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

/// Records [`Kafka::warm_up`] writes and reads.
pub const WARM_UP_RECORDS: u32 = 400_000;

fn warm_up_blocking(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = base_config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("cannot create the warm-up producer")?;
    let payload = [b'x'; 100];
    for n in 0..WARM_UP_RECORDS {
        let key = (n % 64).to_string();
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("the warm-up records were not acknowledged")?;
    let consumer: BaseConsumer = base_config(bootstrap)
        .set("group.id", "sluice-bench-warm-up")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .context("cannot create the warm-up consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..3 {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (mut read, mut ended) = (0u32, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ended < 3 && tokio::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => read += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => bail!("warm-up read failed: {e}"),
            None => {}
        }
    }
    if read < WARM_UP_RECORDS {
        bail!("warm-up read {read} of {WARM_UP_RECORDS} records");
    }
    Ok(())
}
