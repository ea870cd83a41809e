//! A private Apache Kafka broker for one test: `scripts/kafka run` in a temp dir of its own, owned
//! as a child process, so the test may pause (SIGSTOP), kill (SIGKILL) and restart it (same ports,
//! same log dirs) without touching the broker the other tests share.
//!
//! The broker's jars come from the cache `scripts/kafka fetch` fills (`scripts/test` does that
//! before any test runs). This module must NOT be used for the shared broker, and must NOT leave
//! a JVM or a temp dir behind once the handle drops.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tempfile::TempDir;

use crate::kafka::TestKafkaError;

/// The environment variable naming the broker script (default: the workspace's `scripts/kafka`).
pub const SCRIPT_ENV: &str = "SLUICE_KAFKA_SCRIPT";
/// The environment variable naming the directory private brokers live in (`scripts/test` sets it
/// and removes what is left there at exit); the system temp dir when unset.
pub const ROOT_ENV: &str = "SLUICE_TEST_KAFKA_ROOT";

/// How long a (re)start may take until the broker answers a metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long one metadata probe may wait.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// The SASL listeners of a broker started by `scripts/kafka` (PLAIN and SCRAM-SHA-256 on each).
#[derive(Clone)]
pub struct SaslListener {
    /// `host:port` of the SASL_PLAINTEXT listener.
    pub bootstrap: String,
    /// `host:port` of the SASL_SSL listener.
    pub ssl_bootstrap: String,
    /// The certificate (PEM) clients of the SASL_SSL listener trust.
    pub ca_file: PathBuf,
    /// The one user the broker knows.
    pub username: String,
    /// Its password (random per broker).
    pub password: String,
}

impl std::fmt::Debug for SaslListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslListener")
            .field("bootstrap", &self.bootstrap)
            .field("ssl_bootstrap", &self.ssl_bootstrap)
            .field("ca_file", &self.ca_file)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl SaslListener {
    /// Reads the listener a `scripts/kafka` broker wrote into `dir`.
    pub fn from_dir(dir: &Path) -> Result<SaslListener, TestKafkaError> {
        Ok(SaslListener {
            bootstrap: read_trimmed(&dir.join("sasl-bootstrap"))?,
            ssl_bootstrap: read_trimmed(&dir.join("sasl-ssl-bootstrap"))?,
            ca_file: dir.join("tls/ca.pem"),
            username: read_trimmed(&dir.join("sasl-username"))?,
            password: read_trimmed(&dir.join("sasl-password"))?,
        })
    }
}

/// A single-node Apache Kafka that one test owns; killed and removed on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    bootstrap: String,
    child: Mutex<Option<Child>>,
    // Dropped after the child is killed in `Drop`.
    dir: TempDir,
}

impl KafkaBroker {
    /// Formats a new broker in a temp dir and starts it; returns once a metadata request
    /// succeeds.
    pub fn start() -> Result<KafkaBroker, TestKafkaError> {
        KafkaBroker::start_with(false)
    }

    /// [`KafkaBroker::start`], with ACLs enforced when `acls`: PLAINTEXT clients may do anything,
    /// the SASL user nothing until [`KafkaBroker::grant_sasl_user_everything`].
    pub fn start_with(acls: bool) -> Result<KafkaBroker, TestKafkaError> {
        let root = std::env::var_os(ROOT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("broker-")
            .tempdir_in(&root)
            .map_err(|e| TestKafkaError::Broker(format!("temp dir in {}: {e}", root.display())))?;
        if acls {
            // Read by `scripts/kafka` when it formats the dir (the first run).
            fs::write(dir.path().join("acls"), "1\n")
                .map_err(|e| TestKafkaError::Broker(format!("writing the acls marker: {e}")))?;
        }
        let child = spawn(dir.path())?;
        let mut broker = KafkaBroker {
            bootstrap: String::new(),
            child: Mutex::new(Some(child)),
            dir,
        };
        broker.wait_ready()?;
        broker.bootstrap = read_trimmed(&broker.dir.path().join("bootstrap"))?;
        tracing::debug!(bootstrap = broker.bootstrap, "private kafka broker ready");
        Ok(broker)
    }

    /// `bootstrap.servers` of its PLAINTEXT listener (the same across restarts).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Its SASL_PLAINTEXT listener.
    pub fn sasl(&self) -> Result<SaslListener, TestKafkaError> {
        SaslListener::from_dir(self.dir.path())
    }

    /// The broker's data directory (its log is `broker.log` in there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the broker's log, for a failing test's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The first `lines` lines of the broker's log that report an error (the cause of an exit is
    /// near the start, far from the shutdown that follows it).
    pub fn log_errors(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let run = fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default();
        text.lines()
            .chain(run.lines())
            .filter(|l| l.contains(" ERROR ") || l.contains("Exception") || l.contains("FATAL"))
            .take(lines)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Grants the SASL user every operation on every topic, group, transactional id and the
    /// cluster.
    pub fn grant_sasl_user_everything(&self) -> Result<(), TestKafkaError> {
        self.grant_sasl_user(&[
            "--operation",
            "All",
            "--topic",
            "*",
            "--group",
            "*",
            "--transactional-id",
            "*",
            "--cluster",
        ])
    }

    /// Adds an ACL allowing the SASL user what `acl` says (`AclCommand` arguments after
    /// `--add --allow-principal User:NAME`, e.g. `["--operation", "Write", "--topic", "t"]`),
    /// with Kafka's own `AclCommand` over the PLAINTEXT listener.
    pub fn grant_sasl_user(&self, acl: &[&str]) -> Result<(), TestKafkaError> {
        let user = format!("User:{}", self.sasl()?.username);
        let output = Command::new(script())
            .args([
                "tool",
                "org.apache.kafka.tools.AclCommand",
                "--bootstrap-server",
            ])
            .arg(&self.bootstrap)
            .args(["--add", "--allow-principal", &user])
            .args(acl)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestKafkaError::Broker(format!("running AclCommand: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestKafkaError::Broker(format!(
                "AclCommand failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Freezes the broker (SIGSTOP): its sockets stay open and nothing answers, as a hung or
    /// partitioned broker.
    pub fn pause(&self) -> Result<(), TestKafkaError> {
        self.signal("STOP")
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) -> Result<(), TestKafkaError> {
        self.signal("CONT")
    }

    /// Kills the broker (SIGKILL) and reaps it: a crash, with what it wrote to its log files
    /// kept (the page cache survives a process).
    pub fn kill(&self) -> Result<(), TestKafkaError> {
        let mut guard = self.lock();
        if let Some(mut child) = guard.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| TestKafkaError::Broker(format!("reaping the broker: {e}")))?;
        }
        Ok(())
    }

    /// Starts a killed broker again on the same log dirs and ports; returns once a metadata
    /// request succeeds.
    pub fn restart(&self) -> Result<(), TestKafkaError> {
        {
            let mut guard = self.lock();
            if guard.is_some() {
                return Err(TestKafkaError::Broker(
                    "restart of a broker that still runs (kill it first)".to_owned(),
                ));
            }
            *guard = Some(spawn(self.dir.path())?);
        }
        self.wait_ready()
    }

    fn signal(&self, signal: &str) -> Result<(), TestKafkaError> {
        let guard = self.lock();
        let pid = guard
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| TestKafkaError::Broker(format!("SIG{signal} to a killed broker")))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| TestKafkaError::Broker(format!("running kill -{signal}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(TestKafkaError::Broker(format!(
                "kill -{signal} {pid} failed: {status}"
            )))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        // A poisoned lock only means a test panicked while holding it; the child is still ours.
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for this run's "started" log line, then for a metadata request to succeed.
    fn wait_ready(&self) -> Result<(), TestKafkaError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let log = self.dir.path().join("broker.log");
        let mut probe: Option<BaseConsumer> = None;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self
                .lock()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(TestKafkaError::Broker(format!(
                    "the broker exited ({status}) before it was ready; its errors:\n{}\n\
                     its last lines:\n{}",
                    self.log_errors(10),
                    self.log_tail(20)
                )));
            }
            let started = fs::read_to_string(&log)
                .map(|text| text.contains("Kafka Server started"))
                .unwrap_or(false);
            if started {
                if probe.is_none() {
                    let bootstrap = read_trimmed(&self.dir.path().join("bootstrap"))?;
                    probe = Some(
                        ClientConfig::new()
                            .set("bootstrap.servers", &bootstrap)
                            .set("client.id", "sluice-test-probe")
                            .create()?,
                    );
                }
                if let Some(consumer) = &probe
                    && consumer.fetch_metadata(None, METADATA_TIMEOUT).is_ok()
                {
                    return Ok(());
                }
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
        Err(TestKafkaError::Broker(format!(
            "the broker did not answer a metadata request within {READY_TIMEOUT:?}:\n{}",
            self.log_tail(40)
        )))
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        // A paused JVM still dies of SIGKILL; errors mean it is gone already.
        let _ = self.kill();
    }
}

/// The broker script: `SLUICE_KAFKA_SCRIPT`, else the workspace's `scripts/kafka`.
fn script() -> PathBuf {
    std::env::var_os(SCRIPT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../scripts/kafka")
                .to_path_buf()
        })
}

/// `scripts/kafka run DIR` as our child (the script execs the JVM, so the child is the broker).
fn spawn(dir: &Path) -> Result<Child, TestKafkaError> {
    let script = script();
    let out = fs::File::create(dir.join("run.log"))
        .map_err(|e| TestKafkaError::Broker(format!("creating run.log: {e}")))?;
    let err = out
        .try_clone()
        .map_err(|e| TestKafkaError::Broker(format!("creating run.log: {e}")))?;
    Command::new(&script)
        .arg("run")
        .arg(dir)
        // The testkit checks metadata itself; the script's own probe would start a second JVM.
        .env("SLUICE_KAFKA_PROBE", "log")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| TestKafkaError::Broker(format!("running {} run: {e}", script.display())))
}

fn read_trimmed(path: &Path) -> Result<String, TestKafkaError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| TestKafkaError::Broker(format!("reading {}: {e}", path.display())))
}
