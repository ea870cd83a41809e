//! The simulator in a process of its own (for density runs, so its 10,000 sockets and its CPU
//! are not the harness's or the implementation's), and the harness's handle on it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use sluice_sim::{RunningSim, SimConfig};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Arguments of `sluice-bench sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Deltas per second of the shared feed (0: firehose).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Heartbeat comment interval on idle streams.
    #[arg(long, default_value = "15s", value_parser = crate::parse_duration)]
    pub heartbeat: Duration,
    /// Stop the feed after this many deltas.
    #[arg(long)]
    pub max_events: Option<u64>,
}

/// Runs the simulator on a free loopback port, prints its stream URL, serves until stdin closes.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the simulator")?;
    let sim = RunningSim::start(
        SimConfig {
            rate: args.rate,
            heartbeat: args.heartbeat,
            max_events: args.max_events,
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .context("cannot start the simulator")?;
    println!("{}", sim.stream_url());
    let mut sink = Vec::new();
    // Ends at EOF: the harness closed our stdin or died.
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    sim.shutdown().await;
    Ok(())
}

/// A `sluice-bench sim` child process; stops when dropped.
pub struct SimProcess {
    child: Child,
    stdin: ChildStdin,
    /// The SSE endpoint.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
}

impl SimProcess {
    /// Starts `sluice-bench sim` with `rate` and `heartbeat`.
    /// Its log (stderr) goes to `log`.
    pub async fn start(
        rate: f64,
        heartbeat: Duration,
        log: &std::path::Path,
    ) -> anyhow::Result<SimProcess> {
        let log = std::fs::File::create(log).context("cannot create the simulator's log")?;
        let exe = std::env::current_exe().context("cannot find the harness executable")?;
        let mut child = Command::new(exe)
            .arg("sim")
            .arg("--rate")
            .arg(rate.to_string())
            .arg("--heartbeat")
            .arg(format!("{}ms", heartbeat.as_millis()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the simulator process")?;
        let stdin = child.stdin.take().context("simulator has no stdin")?;
        let stdout = child.stdout.take().context("simulator has no stdout")?;
        let url = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .context("the simulator did not print its URL")??
        .context("the simulator exited before it was ready")?;
        let port = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|host| host.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .with_context(|| format!("no port in the simulator's URL {url:?}"))?;
        Ok(SimProcess {
            child,
            stdin,
            url,
            port,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes its stdin and waits (briefly) for it to exit.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }
}
