//! The worker test rig: a temp config directory, Kafka (mock cluster, or the broker named by
//! `SLUICE_TEST_KAFKA`), the real `sluice worker` binary, and readers of what reached Kafka.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sluice_sim::{RunningSim, SimConfig};
use sluice_testkit::{SaslListener, TestKafka, free_port, metric_value, unique_topic};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::Instant;

mod converge;
mod empty_base;
mod publish;

#[allow(unused_imports)]
pub use converge::{assert_converges, state_of, truth};
#[allow(unused_imports)]
pub use publish::{produce_all, produce_delta, produce_event};

/// Upper bound for anything a test waits for; reaching it fails the test (not a timing assertion).
pub const LIMIT: Duration = Duration::from_secs(90);

/// One test's world: config dir, topics, Kafka.
pub struct Rig {
    pub kafka: TestKafka,
    pub dir: PathBuf,
    pub events: String,
    pub checkpoints: String,
    /// The run-time target definitions topic (the worker creates it).
    pub targets: String,
    /// The aggregator's compacted snapshot topic.
    pub state: String,
    /// The aggregator's dead-letter topic.
    pub dead_letter: String,
    /// The aggregators' members topic (where each says where it answers and what it owns).
    pub members: String,
    /// The aggregators' consumer group.
    pub group: String,
    /// When set, the worker and aggregator reach Kafka through its SASL_SSL listener (TLS and
    /// SCRAM-SHA-256),
    /// configured as a user would: `kafka.properties` plus the password in
    /// `kafka.secret_properties` (a file). The rig's own clients stay on PLAINTEXT.
    pub sasl: Option<SaslListener>,
    /// Extra `kafka.properties` lines (four spaces in) for the aggregators started from now on.
    pub aggregator_properties: std::sync::Mutex<String>,
}

/// A record of the events topic, as the tests look at it.
#[derive(Debug, Clone)]
pub struct Rec {
    pub key: String,
    pub value: String,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

impl Rec {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn id(&self) -> u64 {
        self.header("sse.id").parse().expect("numeric sse.id")
    }
}

impl Rig {
    /// A rig on the test Kafka (external when `SLUICE_TEST_KAFKA` is set, else the mock cluster).
    pub async fn new(name: &str) -> Rig {
        Rig::with_kafka(name, TestKafka::start().expect("test kafka")).await
    }

    /// A rig on the given Kafka.
    pub async fn with_kafka(name: &str, kafka: TestKafka) -> Rig {
        Rig::with_partitions(name, kafka, 1).await
    }

    /// A rig whose events topic has `partitions` partitions.
    pub async fn with_partitions(name: &str, kafka: TestKafka, partitions: i32) -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "sluice-worker-{name}-{}-{}",
            std::process::id(),
            unique_topic("d")
        ));
        std::fs::create_dir_all(dir.join("targets")).expect("temp dir");
        let events = unique_topic(&format!("{name}.events"));
        let checkpoints = unique_topic(&format!("{name}.checkpoints"));
        // It takes every event the default parser limits accept, as a topic the worker creates
        // does (the worker refuses to start on a smaller one).
        let max_message = sluice_publish::max_record_bytes(sluice_sse::Limits::default());
        kafka
            .create_topic_with(
                &events,
                partitions,
                &[("max.message.bytes", &max_message.to_string())],
            )
            .await
            .expect("events topic");
        kafka
            .create_topic(&checkpoints, 1, true)
            .await
            .expect("checkpoints topic");
        let state = unique_topic(&format!("{name}.state"));
        kafka
            .create_topic(&state, 1, true)
            .await
            .expect("state topic");
        let dead_letter = unique_topic(&format!("{name}.dead"));
        kafka
            .create_topic(&dead_letter, 1, false)
            .await
            .expect("dead-letter topic");
        Rig {
            kafka,
            dir,
            events,
            checkpoints,
            targets: unique_topic(&format!("{name}.targets")),
            state,
            dead_letter,
            members: unique_topic(&format!("{name}.members")),
            group: unique_topic(&format!("{name}.aggregators")),
            sasl: None,
            aggregator_properties: std::sync::Mutex::default(),
        }
    }

    /// A rig whose worker and aggregator authenticate to the broker's SASL_SSL listener
    /// (SCRAM-SHA-256, trusting the broker's certificate);
    /// the password is written to `kafka-password` in the rig's dir and referenced from there.
    pub async fn with_sasl(name: &str, kafka: TestKafka, sasl: SaslListener) -> Rig {
        let mut rig = Rig::with_kafka(name, kafka).await;
        std::fs::write(
            rig.dir.join("kafka-password"),
            format!("{}\n", sasl.password),
        )
        .expect("write the password file");
        rig.sasl = Some(sasl);
        rig
    }

    /// The `kafka:` lines both processes share: brokers, then `properties` entries (`extra`,
    /// already indented by four spaces) and, with SASL, the security settings.
    fn kafka_yaml(&self, extra: &str) -> String {
        match &self.sasl {
            None => format!(
                "  brokers: [\"{}\"]\n  properties:\n{extra}",
                self.kafka.bootstrap()
            ),
            Some(sasl) => format!(
                "  brokers: [\"{brokers}\"]\n  properties:\n{extra}    security.protocol: SASL_SSL\n    ssl.ca.location: {ca}\n    sasl.mechanism: SCRAM-SHA-256\n    sasl.username: {user}\n  secret_properties:\n    sasl.password: {{file: kafka-password}}\n",
                brokers = sasl.ssl_bootstrap,
                ca = sasl.ca_file.display(),
                user = sasl.username,
            ),
        }
    }

    /// Writes `targets/<id>.yaml`: `id`, `url`, then `extra` YAML lines.
    pub fn target(&self, id: &str, url: &str, extra: &str) {
        let body = format!("id: {id}\nurl: {url}\n{extra}\n");
        std::fs::write(self.dir.join("targets").join(format!("{id}.yaml")), body)
            .expect("write target");
    }

    /// Writes `worker.yaml` for this rig with fast test defaults, plus `extra` top-level YAML.
    pub fn worker_yaml(&self, port: u16, extra: &str) -> PathBuf {
        self.worker_yaml_tuned(port, extra, "", "20s")
    }

    /// [`Rig::worker_yaml`] with more `kafka.properties` lines (each `    key: "value"\n`) and
    /// another shutdown grace.
    pub fn worker_yaml_tuned(
        &self,
        port: u16,
        extra: &str,
        kafka_properties: &str,
        grace: &str,
    ) -> PathBuf {
        let path = self.dir.join("worker.yaml");
        let body = format!(
            "kafka:\n{kafka}\
             topics:\n  events: {events}\n  checkpoints: {checkpoints}\n  targets: {targets}\n\
             http:\n  listen: 127.0.0.1:{port}\n\
             targets_dir: targets\n\
             defaults:\n  idle_timeout: 5s\n  connect_timeout: 5s\n  backoff:\n    initial: 20ms\n    max: 500ms\n    reset_after: 10s\n\
             shutdown:\n  grace: {grace}\n{extra}\n",
            kafka = self.kafka_yaml(&format!("    linger.ms: \"2\"\n{kafka_properties}")),
            events = self.events,
            checkpoints = self.checkpoints,
            targets = self.targets,
        );
        std::fs::write(&path, body).expect("write worker.yaml");
        path
    }

    /// Starts `sluice worker` on this rig's config (writing `worker.yaml` with `extra`).
    pub async fn start(&self, extra: &str) -> Worker {
        self.start_with_env(extra, &[]).await
    }

    /// [`Rig::start`] with extra environment variables.
    pub async fn start_with_env(&self, extra: &str, env: &[(&str, &str)]) -> Worker {
        self.start_tuned(extra, "", "20s", env).await
    }

    /// [`Rig::start`] with more `kafka.properties` lines, another grace, and environment.
    pub async fn start_tuned(
        &self,
        extra: &str,
        kafka_properties: &str,
        grace: &str,
        env: &[(&str, &str)],
    ) -> Worker {
        let worker = self.spawn_worker(extra, kafka_properties, grace, env).await;
        worker.wait_ready().await;
        worker
    }

    /// Starts `sluice worker` and waits for its operations server (`/healthz`), not for it to
    /// be ready.
    pub async fn spawn_worker(
        &self,
        extra: &str,
        kafka_properties: &str,
        grace: &str,
        env: &[(&str, &str)],
    ) -> Worker {
        let port = free_port().expect("a free loopback port");
        let config = self.worker_yaml_tuned(port, extra, kafka_properties, grace);
        let log = self.dir.join(format!("worker-{}.log", unique_topic("l")));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg("--log")
            .arg("debug,rdkafka=info,librdkafka=info,h2=info,hyper_util=info,reqwest=info")
            .arg("worker")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start sluice worker");
        let worker = Worker {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
            http: no_redirects(),
        };
        worker
            .wait_for("/healthz to answer 200", async |w: &Worker| {
                w.get("/healthz").await.is_some_and(|(code, _)| code == 200)
            })
            .await;
        worker
    }

    /// The aggregators' `session.timeout.ms`: 6 s, so the lost-session test is quick (the
    /// test broker's `group.min.session.timeout.ms` is lowered to 1 s by `scripts/kafka`).
    pub fn session_timeout_ms(&self) -> u32 {
        6_000
    }

    /// Writes `aggregator.yaml` (on the rig's `worker.yaml`, which must exist) with fast test
    /// settings, plus `extra` top-level YAML; returns its path.
    pub fn aggregator_yaml(&self, port: u16, extra: &str) -> PathBuf {
        self.aggregator_yaml_with(port, extra, self.session_timeout_ms())
    }

    /// [`Rig::aggregator_yaml`] with another `session.timeout.ms`.
    pub fn aggregator_yaml_with(&self, port: u16, extra: &str, session_timeout_ms: u32) -> PathBuf {
        let path = self.dir.join(format!("aggregator-{port}.yaml"));
        let body = format!(
            "worker: worker.yaml\n\
             kafka:\n  group_id: {group}\n{kafka}\
             topics:\n  state: {state}\n  dead_letter: {dead}\n  members: {members}\n\
             http:\n  listen: 127.0.0.1:{port}\n\
             snapshots:\n  interval: 2s\n  dir: snapshots\n\
             shutdown:\n  grace: 20s\n{extra}\n",
            kafka = self.kafka_yaml(&format!(
                "    session.timeout.ms: \"{session_timeout_ms}\"\n    heartbeat.interval.ms: \"500\"\n{}",
                self.aggregator_properties
                    .lock()
                    .expect("aggregator properties")
            )),
            group = self.group,
            state = self.state,
            dead = self.dead_letter,
            members = self.members,
        );
        std::fs::write(&path, body).expect("write aggregator.yaml");
        path
    }

    /// Starts `sluice aggregator` on this rig (writing its config with `extra`) and waits for
    /// `/healthz`; `ready` also waits for `/readyz`.
    pub async fn start_aggregator(&self, extra: &str, ready: bool) -> Worker {
        self.start_aggregator_with(extra, ready, self.session_timeout_ms(), &[])
            .await
    }

    /// [`Rig::start_aggregator`] with `env` set for the process (e.g. `SLUICE__HTTP__…`
    /// overrides of the `http` section the rig writes).
    pub async fn start_aggregator_with_env(
        &self,
        extra: &str,
        ready: bool,
        env: &[(&str, &str)],
    ) -> Worker {
        self.start_aggregator_with(extra, ready, self.session_timeout_ms(), env)
            .await
    }

    /// [`Rig::start_aggregator`] with another `session.timeout.ms` and extra environment
    /// variables.
    pub async fn start_aggregator_with(
        &self,
        extra: &str,
        ready: bool,
        session_timeout_ms: u32,
        env: &[(&str, &str)],
    ) -> Worker {
        if !self.dir.join("worker.yaml").exists() {
            // The aggregator reads the targets through the worker's file; the port is unused.
            self.worker_yaml(free_port().expect("a free loopback port"), "");
        }
        let port = free_port().expect("a free loopback port");
        let config = self.aggregator_yaml_with(port, extra, session_timeout_ms);
        let log = self
            .dir
            .join(format!("aggregator-{}.log", unique_topic("l")));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--log")
            .arg("debug,rdkafka=info,librdkafka=info,h2=info,hyper_util=info,reqwest=info")
            .arg("aggregator")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start sluice aggregator");
        let aggregator = Worker {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
            http: no_redirects(),
        };
        if ready {
            aggregator.wait_ready().await;
        } else {
            aggregator
                .wait_for("/healthz to answer 200", async |w: &Worker| {
                    w.get("/healthz").await.is_some_and(|(code, _)| code == 200)
                })
                .await;
        }
        aggregator
    }

    /// Reads the events topic from the beginning until `done` says the records are enough.
    pub async fn records_until(&self, done: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
        read_until(&self.kafka, &self.events, done).await
    }

    /// Waits until every target in `expected` (id → last event id N) has ids 1..=N in Kafka.
    pub async fn wait_all_ids(&self, expected: &[(&str, u64)]) -> Vec<Rec> {
        self.records_until(|records| {
            expected.iter().all(|(target, n)| {
                let ids = ids_of(records, target);
                first_occurrences(&ids).len() as u64 >= *n
            })
        })
        .await
    }

    /// The checkpoint topic, read to its end: target → last acknowledged id.
    pub async fn checkpoints(&self) -> HashMap<String, String> {
        let mut config = self.kafka.producer_config();
        config.set("client.id", "sluice-test-checkpoints");
        sluice_publish::read_checkpoints(&config, &self.checkpoints, Duration::from_secs(30))
            .await
            .expect("read checkpoints")
            .resume
            .into_iter()
            .map(|(target, resume)| (target, resume.event_id))
            .collect()
    }
}

/// The last record of every key of a checkpoint topic: event id, format, owner epoch, owner.
pub async fn last_checkpoint_records(
    kafka: &TestKafka,
    topic: &str,
) -> HashMap<String, (String, u32, u64, Option<String>)> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let config = kafka.producer_config();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut last = HashMap::new();
        sluice_publish::read_compacted_records(config, &topic, LIMIT, |key, message| {
            let Some(value) = message.payload() else {
                last.remove(key);
                return;
            };
            let headers = message.headers().into_iter().flat_map(|h| h.iter());
            let stored =
                sluice_publish::checkpoint_record::decode(value, headers.map(|h| (h.key, h.value)))
                    .expect("a checkpoint record");
            last.insert(
                key.to_owned(),
                (
                    stored.event_id.to_owned(),
                    stored.format,
                    stored.epoch,
                    stored.owner.map(str::to_owned),
                ),
            );
        })
        .expect("read the checkpoint topic");
        last
    })
    .await
    .expect("reader task")
}

/// Every record of a checkpoint topic, per key in order: its handover mark and owner.
pub async fn checkpoint_marks(
    kafka: &TestKafka,
    topic: &str,
) -> HashMap<String, Vec<(sluice_publish::Mark, String)>> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let config = kafka.producer_config();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut all: HashMap<String, Vec<(sluice_publish::Mark, String)>> = HashMap::new();
        sluice_publish::read_compacted_records(config, &topic, LIMIT, |key, message| {
            let Some(value) = message.payload() else {
                return;
            };
            let headers = message.headers().into_iter().flat_map(|h| h.iter());
            let stored =
                sluice_publish::checkpoint_record::decode(value, headers.map(|h| (h.key, h.value)))
                    .expect("a checkpoint record");
            all.entry(key.to_owned())
                .or_default()
                .push((stored.mark, stored.owner.unwrap_or_default().to_owned()));
        })
        .expect("read the checkpoint topic");
        all
    })
    .await
    .expect("reader task")
}

/// The `sse.id`s of `target`'s records, in Kafka order.
pub fn ids_of(records: &[Rec], target: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.header("sluice.target") == target)
        .map(Rec::id)
        .collect()
}

/// `ids` with every repeat of an earlier id removed, order kept.
pub fn first_occurrences(ids: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Fails unless `ids` (duplicates allowed) first show every id 1..=n exactly in order.
pub fn assert_complete_in_order(target: &str, ids: &[u64], n: u64) {
    let first = first_occurrences(ids);
    let expected: Vec<u64> = (1..=n).collect();
    if first != expected {
        let missing: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|i| !first.contains(i))
            .collect();
        panic!(
            "{target}: ids in kafka are not 1..={n} in order; missing {missing:?}; first occurrences {first:?}"
        );
    }
}

/// Reads partition 0 of `topic` from the beginning until `done` says the records are enough.
pub async fn read_topic_until(
    kafka: &TestKafka,
    topic: &str,
    done: impl Fn(&[Rec]) -> bool,
) -> Vec<Rec> {
    read_until(kafka, topic, done).await
}

async fn read_until(kafka: &TestKafka, topic: &str, done: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
    let consumer: StreamConsumer = kafka
        .consumer_config(&unique_topic("sluice-test-reader"))
        .set("fetch.wait.max.ms", "20")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + LIMIT;
    let mut records = Vec::new();
    let mut checked = usize::MAX;
    loop {
        // `done` looks at every record: ask it when the topic is drained for now or every 2000
        // records, not after each one.
        let message = match tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await {
            Ok(message) => Some(message.expect("consume")),
            Err(_) => None,
        };
        let due = message.is_none() || records.len() % 2000 == 0;
        if due && checked != records.len() {
            checked = records.len();
            if done(&records) {
                return records;
            }
        }
        if Instant::now() > deadline {
            let mut summary: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
            for r in &records {
                let entry = summary
                    .entry(r.header("sluice.target").to_owned())
                    .or_default();
                entry.0 += 1;
                entry.1 = entry.1.max(r.header("sse.id").parse().unwrap_or(0));
            }
            panic!(
                "kafka topic {topic} did not get the expected records within {LIMIT:?}; \
                 got {} records; per target (count, max id): {summary:?}",
                records.len()
            )
        }
        let Some(message) = message else {
            continue;
        };
        let mut headers = HashMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        records.push(Rec {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            value: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            headers,
            partition: message.partition(),
            offset: message.offset(),
        });
    }
}

/// A running `sluice worker`.
pub struct Worker {
    child: Child,
    log: PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Worker {
    /// Waits for `/readyz` to say ready (fails the test if the process exits first).
    pub async fn wait_ready(&self) {
        self.wait_for("/readyz to answer 200", async |w: &Worker| {
            w.get("/readyz").await.is_some_and(|(code, _)| code == 200)
        })
        .await;
    }

    /// `http://127.0.0.1:PORT` of its HTTP server.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path` on the operations server: status code and body.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().await.ok()?))
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Value {
        let (_, body) = self.get("/status").await.expect("status answers");
        serde_json::from_str(&body).expect("status is json")
    }

    /// The status row of `target`.
    pub async fn row(&self, target: &str) -> Value {
        let status = self.status().await;
        status["targets"]
            .as_array()
            .expect("targets array")
            .iter()
            .find(|r| r["target"] == target)
            .cloned()
            .unwrap_or_else(|| panic!("no status row for {target}: {status}"))
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("metrics answer").1
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Polls `check` (every 20 ms) until it holds; fails after [`LIMIT`] or if the worker exits.
    pub async fn wait_for(&self, what: &str, check: impl AsyncFn(&Worker) -> bool) {
        let deadline = Instant::now() + LIMIT;
        loop {
            if check(self).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; worker log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The worker's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("worker is running")
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("worker exits after SIGTERM")
            .expect("wait for worker");
        (exit, self.log())
    }

    /// Waits for the process to exit on its own (fails the test after [`LIMIT`]).
    pub async fn exited(mut self) -> (ExitStatus, String) {
        let exit = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("the process exits on its own")
            .expect("wait for the process");
        (exit, self.log())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): the process freezes as a paused VM or a long GC
    /// pause would, and wakes up later.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.pid();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub async fn kill(mut self) -> String {
        self.child.kill().await.expect("kill worker");
        self.log()
    }
}

/// The `aggregate:` section for a simulator target whose base state is at `base_url`.
pub fn aggregate_yaml(base_url: &str) -> String {
    format!(
        "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n    version: /version\n\
         \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n\
         \x20 delete_events: [delete]\n  reset_events: [reset]\n"
    )
}

/// One target id per partition of a `partitions`-partition topic (`t<n>`, partition order).
pub fn one_target_per_partition(partitions: i32) -> Vec<String> {
    let want = usize::try_from(partitions).expect("a positive partition count");
    let mut ids: std::collections::BTreeMap<i32, String> = std::collections::BTreeMap::new();
    for n in 0.. {
        let id = format!("t{n}");
        ids.entry(sluice_aggregator::partition_for(&id, partitions))
            .or_insert(id);
        if ids.len() == want {
            break;
        }
    }
    ids.into_values().collect()
}

/// Whether the test runs on a real broker; skips (or fails under `SLUICE_TEST_STRICT`) otherwise,
/// saying `why` it needs one.
pub fn real_broker_or_skip(test: &str, why: &str) -> bool {
    if sluice_testkit::is_real_broker_run() {
        return true;
    }
    sluice_testkit::skip_or_fail(test, why);
    false
}

/// A simulator on a loopback port that stops after `events` deltas at `rate` per second.
pub async fn sim(events: u64, rate: f64) -> RunningSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    RunningSim::start(
        SimConfig {
            rate,
            max_events: Some(events),
            heartbeat: Duration::from_millis(200),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .expect("simulator starts")
}

/// A simulator on a loopback port with `config`.
pub async fn sim_with(config: SimConfig) -> RunningSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    RunningSim::start(config, listener)
        .await
        .expect("simulator starts")
}

/// Resident set size of process `pid` in bytes, from `/proc`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in proc status")
}

/// Writes a file under the rig dir and returns its path.
pub fn write_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write file");
    path
}

/// An HTTP client that shows redirects instead of following them (an aggregator sends a client
/// to a target's owner with a 307: a test must see which one answered).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// Applies an aggregator `/stream` change event (`upsert` / `delete`) to `state`; an
/// `up-to-date` control event changes nothing.
pub fn apply_change(
    state: &mut std::collections::BTreeMap<String, Value>,
    event: &sluice_sse::Event,
) {
    if event.event.as_str() == "up-to-date" {
        return;
    }
    let change: Value = serde_json::from_str(event.data.as_str()).unwrap();
    let key = change["key"].as_str().unwrap().to_owned();
    match event.event.as_str() {
        "upsert" => {
            state.insert(key, change["value"].clone());
        }
        "delete" => {
            state.remove(&key);
        }
        other => panic!("unexpected event {other}"),
    }
}

/// The headers a worker gives a delta of `target` with event id `id` (`message` events).
pub fn delta_headers(target: &str, id: &str) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    OwnedHeaders::new()
        .insert(Header {
            key: "sluice.target",
            value: Some(target),
        })
        .insert(Header {
            key: "sse.id",
            value: Some(id),
        })
        .insert(Header {
            key: "sse.event",
            value: Some("message"),
        })
}
