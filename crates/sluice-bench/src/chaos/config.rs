//! The configuration files of a chaos run, written the way a user writes them: `worker.yaml`,
//! one target file per simulator (a secret token header and a proxy password, both as `{file:}`
//! references), `aggregator.yaml`, and the secret files. With several workers each worker file
//! has a `fleet:` section (one group, its own static `instance_id`) and lists every target, so
//! the group shares them. Nothing here starts a process.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::secrets::Secrets;
use super::upstream::{Via, World};
use crate::impls::yaml_string;

/// The request header that carries the secret token.
pub const TOKEN_HEADER: &str = "X-Chaos-Token";

/// Topic and group names of one run.
#[derive(Debug, Clone)]
pub struct Names {
    /// Raw events.
    pub events: String,
    /// The worker's compacted checkpoints.
    pub checkpoints: String,
    /// The aggregator's compacted snapshots.
    pub state: String,
    /// The aggregator's dead letters.
    pub dead_letter: String,
    /// The aggregators' consumer group.
    pub group: String,
    /// The workers' fleet group (used only with several workers).
    pub fleet: String,
}

impl Names {
    /// Fresh names for a run with `seed`, unique by time.
    pub fn fresh(seed: u64) -> Names {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let base = format!("chaos-{seed}-{stamp}");
        Names {
            events: format!("{base}.events"),
            checkpoints: format!("{base}.checkpoints"),
            state: format!("{base}.state"),
            dead_letter: format!("{base}.dead"),
            group: format!("{base}.aggregators"),
            fleet: format!("{base}.fleet"),
        }
    }
}

/// What the files say besides the world's addresses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Topics and group.
    pub names: Names,
    /// The aggregators' `session.timeout.ms`, when not the client's default.
    pub session_timeout: Option<Duration>,
    /// The aggregator's snapshot interval.
    pub snapshot_interval: Duration,
    /// The workers' fleet, when several share the targets.
    pub fleet: Option<FleetSettings>,
    /// `delivery.mode: exactly_once` for the worker.
    pub exactly_once: bool,
}

/// The `fleet:` section every worker of a fleet run gets (with its own `instance_id`).
#[derive(Debug, Clone, Copy)]
pub struct FleetSettings {
    /// `fleet.partitions`: the checkpoint topic's partitions.
    pub partitions: i32,
    /// `fleet.session_timeout`.
    pub session_timeout: Duration,
    /// `fleet.handover_timeout` (`None`: the default), and no `instance_id` (dynamic members,
    /// which leave the group on SIGTERM) when set.
    pub handover_timeout: Option<Duration>,
}

/// The files written.
#[derive(Debug, Clone)]
pub struct Files {
    /// `worker.yaml` of worker number `i` (every worker lists every target).
    pub workers: Vec<PathBuf>,
    /// `aggregator.yaml`.
    pub aggregator: PathBuf,
    /// The workers' ops addresses (`127.0.0.1:PORT`), by worker.
    pub worker_listen: Vec<String>,
    /// The aggregator's HTTP address.
    pub aggregator_listen: String,
}

/// Writes every file of the run under `dir`.
pub fn write(
    dir: &Path,
    world: &World,
    secrets: &Secrets,
    s: &Settings,
    workers: usize,
) -> anyhow::Result<Files> {
    let secret_dir = dir.join("secrets");
    std::fs::create_dir_all(&secret_dir).context("cannot create the secrets dir")?;
    let token = secret_dir.join("token");
    let http_password = secret_dir.join("http-proxy-password");
    let socks_password = secret_dir.join("socks-proxy-password");
    std::fs::write(&token, format!("{}\n", secrets.token.value))?;
    std::fs::write(
        &http_password,
        format!("{}\n", secrets.http_proxy_password.value),
    )?;
    std::fs::write(
        &socks_password,
        format!("{}\n", secrets.socks_proxy_password.value),
    )?;

    let targets = dir.join("targets");
    std::fs::create_dir_all(&targets).context("cannot create the targets dir")?;
    for upstream in &world.upstreams {
        let password = match upstream.via {
            Via::HttpProxy => &http_password,
            Via::SocksProxy => &socks_password,
        };
        let body = target_yaml(
            &upstream.id,
            &upstream.sim.base_url(),
            &world.proxy_url(upstream.via),
            password,
            &token,
        );
        std::fs::write(targets.join(format!("{}.yaml", upstream.id)), body)
            .with_context(|| format!("cannot write target {}", upstream.id))?;
    }

    let mut files = Files {
        workers: Vec::new(),
        aggregator: dir.join("aggregator.yaml"),
        worker_listen: Vec::new(),
        aggregator_listen: format!("127.0.0.1:{}", crate::stable_port()?),
    };
    for n in 0..workers {
        let listen = format!("127.0.0.1:{}", crate::stable_port()?);
        let file = dir.join(format!("worker-{n}.yaml"));
        std::fs::write(&file, worker_yaml(s, &listen, n)?).context("cannot write worker.yaml")?;
        files.workers.push(file);
        files.worker_listen.push(listen);
    }
    std::fs::write(
        &files.aggregator,
        aggregator_yaml(s, &files.aggregator_listen)?,
    )
    .context("cannot write aggregator.yaml")?;
    Ok(files)
}

fn target_yaml(id: &str, base: &str, proxy: &str, password: &Path, token: &Path) -> String {
    format!(
        "# Generated by sluice-bench chaos.\n\
         id: {id}\n\
         url: {url}\n\
         headers:\n  {TOKEN_HEADER}: {{file: {token}}}\n\
         proxy:\n  url: {proxy}\n  password: {{file: {password}}}\n\
         key: target\n\
         aggregate:\n  base:\n    url: {snapshot}\n    items: /items\n    key: /key\n    version: /version\n\
         \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n\
         \x20 delete_events: [delete]\n  reset_events: [reset]\n",
        // Every event from the first: a fresh target reads the feed from its start.
        url = yaml_string(&format!("{base}/v1/stream?last_event_id=0")),
        token = yaml_string(&token.display().to_string()),
        proxy = yaml_string(proxy),
        password = yaml_string(&password.display().to_string()),
        snapshot = yaml_string(&format!("{base}/v1/snapshot")),
    )
}

fn worker_yaml(s: &Settings, listen: &str, n: usize) -> anyhow::Result<String> {
    let mut w = String::from("# Generated by sluice-bench chaos.\nkafka:\n  brokers:\n");
    for broker in s.bootstrap.split(',') {
        writeln!(w, "    - {}", yaml_string(broker.trim()))?;
    }
    writeln!(
        w,
        "  client_id: chaos-worker\n  properties:\n    linger.ms: \"5\"\n\
         topics:\n  events: {}\n  checkpoints: {}\n\
         http:\n  listen: {}\n\
         targets_dir: targets\n\
         defaults:\n  idle_timeout: 5s\n  connect_timeout: 5s\n  backoff:\n    initial: 100ms\n    max: 2s\n    reset_after: 10s\n\
         shutdown:\n  grace: 10s",
        yaml_string(&s.names.events),
        yaml_string(&s.names.checkpoints),
        yaml_string(listen),
    )?;
    if s.exactly_once {
        writeln!(w, "delivery:\n  mode: exactly_once")?;
    }
    if let Some(fleet) = s.fleet {
        // A stable static-membership id per worker, as a StatefulSet pod has: a kill -9 and
        // restart takes its partitions back; a pause longer than the session loses them.
        writeln!(
            w,
            "fleet:\n  group_id: {}\n  partitions: {}\n  session_timeout: {}ms",
            yaml_string(&s.names.fleet),
            fleet.partitions,
            fleet.session_timeout.as_millis(),
        )?;
        match fleet.handover_timeout {
            Some(timeout) => writeln!(w, "  handover_timeout: {}ms", timeout.as_millis())?,
            None => writeln!(w, "  instance_id: chaos-worker-{n}")?,
        }
    }
    Ok(w)
}

fn aggregator_yaml(s: &Settings, listen: &str) -> anyhow::Result<String> {
    let mut a = String::from(
        "# Generated by sluice-bench chaos.\nworker: worker-0.yaml\nkafka:\n  brokers:\n",
    );
    for broker in s.bootstrap.split(',') {
        writeln!(a, "    - {}", yaml_string(broker.trim()))?;
    }
    writeln!(
        a,
        // A stable static-membership id, as a StatefulSet pod has: each kill -9 and restart
        // takes the partitions back at once instead of waiting for the dead run's session.
        "  client_id: chaos-aggregator\n  group_id: {}\n  group_instance_id: chaos-aggregator-0",
        yaml_string(&s.names.group)
    )?;
    match s.session_timeout {
        Some(timeout) => {
            let ms = timeout.as_millis();
            writeln!(
                a,
                "  properties:\n    session.timeout.ms: \"{ms}\"\n    heartbeat.interval.ms: \"{}\"",
                (ms / 6).max(100)
            )?;
        }
        None => a.push_str("  properties: {}\n"),
    }
    writeln!(
        a,
        "topics:\n  state: {}\n  dead_letter: {}\n\
         http:\n  listen: {}\n\
         snapshots:\n  interval: {}ms\n  dir: snapshots\n\
         shutdown:\n  grace: 10s",
        yaml_string(&s.names.state),
        yaml_string(&s.names.dead_letter),
        yaml_string(listen),
        s.snapshot_interval.as_millis(),
    )?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_target_file_references_its_secrets_and_never_holds_them() {
        let text = target_yaml(
            "c00",
            "http://127.0.0.1:5",
            "http://chaos@127.0.0.1:6",
            Path::new("/x/pw"),
            Path::new("/x/token"),
        );
        assert!(
            text.contains("X-Chaos-Token: {file: \"/x/token\"}"),
            "{text}"
        );
        assert!(text.contains("password: {file: \"/x/pw\"}"), "{text}");
        assert!(text.contains("last_event_id=0"), "{text}");
        assert!(
            text.contains("url: \"http://127.0.0.1:5/v1/snapshot\""),
            "{text}"
        );
    }

    fn settings(fleet: Option<FleetSettings>) -> Settings {
        Settings {
            bootstrap: "127.0.0.1:9092".to_owned(),
            names: Names::fresh(5),
            session_timeout: None,
            snapshot_interval: Duration::from_secs(5),
            fleet,
            exactly_once: false,
        }
    }

    #[test]
    fn a_fleet_worker_file_is_a_valid_fleet_member_with_its_own_instance_id() {
        let s = settings(Some(FleetSettings {
            partitions: 12,
            session_timeout: Duration::from_secs(3),
            handover_timeout: None,
        }));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("targets")).unwrap();
        let file = dir.path().join("worker-2.yaml");
        std::fs::write(&file, worker_yaml(&s, "127.0.0.1:7", 2).unwrap()).unwrap();
        let config = sluice_config::load(&file).unwrap();
        let sluice_config::Fleet::Group(group) = config.fleet else {
            panic!("no fleet: {:?}", config.fleet);
        };
        assert_eq!(group.group_id, s.names.fleet);
        assert_eq!(group.partitions, 12);
        assert_eq!(group.instance_id.as_deref(), Some("chaos-worker-2"));
        assert_eq!(group.session_timeout, Duration::from_secs(3));
        // The handover bench's workers are dynamic members with a handover bound.
        let dynamic = settings(Some(FleetSettings {
            partitions: 12,
            session_timeout: Duration::from_secs(3),
            handover_timeout: Some(Duration::from_millis(2500)),
        }));
        std::fs::write(&file, worker_yaml(&dynamic, "127.0.0.1:7", 2).unwrap()).unwrap();
        let config = sluice_config::load(&file).unwrap();
        let sluice_config::Fleet::Group(group) = config.fleet else {
            panic!("no fleet: {:?}", config.fleet);
        };
        assert_eq!(group.instance_id, None);
        assert_eq!(group.handover_timeout, Duration::from_millis(2500));
        let single = worker_yaml(&settings(None), "127.0.0.1:7", 0).unwrap();
        assert!(!single.contains("fleet"), "{single}");
    }
}
