//! `sluice demo`, the README's run command, as a newcomer meets it: the real binary on the
//! shipped `config/`, on free loopback ports. It must print where everything is, show progress
//! with merged deltas, stop cleanly on SIGTERM, and its two pages must render in a real browser
//! (headless Chromium, Debian's `chromium`) with the live target and non-zero counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rig::LIMIT;
use sluice_testkit::skip::current_test_name;
use sluice_testkit::unique_topic;
use sluice_testkit::{free_port, metric_value};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The live target of the shipped config.
const TARGET: &str = "sim-prices";
/// Limit on one Chromium run.
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

/// A running `sluice demo` with its stdout collected line by line.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
    dir: PathBuf,
    worker: String,
    aggregator: String,
    http: reqwest::Client,
}

impl Demo {
    /// Starts the demo on the repository's `config/aggregator.yaml`, every part on a free port.
    async fn start(name: &str) -> Demo {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/aggregator.yaml");
        Demo::start_with(name, Some(&config)).await
    }

    /// Starts the demo with `--config` when given, else with none, from an empty directory.
    async fn start_with(name: &str, config: Option<&Path>) -> Demo {
        let dir = std::env::temp_dir().join(format!(
            "sluice-demo-{name}-{}",
            unique_topic(&std::process::id().to_string())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (sim, worker, aggregator) = (
            free_port().expect("a free loopback port"),
            free_port().expect("a free loopback port"),
            free_port().expect("a free loopback port"),
        );
        let log = dir.join("demo.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.current_dir(&dir).arg("demo");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .arg("--sim-listen")
            .arg(format!("127.0.0.1:{sim}"))
            .arg("--worker-listen")
            .arg(format!("127.0.0.1:{worker}"))
            .arg("--aggregator-listen")
            .arg(format!("127.0.0.1:{aggregator}"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start sluice demo");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Demo {
            child,
            stdout,
            log,
            dir,
            worker: format!("http://127.0.0.1:{worker}"),
            aggregator: format!("http://127.0.0.1:{aggregator}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// Everything printed on stdout so far.
    fn output(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// The largest `merged N` of the progress lines so far.
    fn merged(&self) -> Option<u64> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| progress_count(line, "merged"))
            .max()
    }

    async fn get(&self, url: &str) -> Option<(u16, String)> {
        let response = self.http.get(url).send().await.ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().await.ok()?))
    }

    async fn answers_200(&self, url: &str) -> bool {
        self.get(url).await.is_some_and(|(code, _)| code == 200)
    }

    /// Polls `check` until it holds; fails after [`LIMIT`] or when the demo exits.
    async fn wait_for(&mut self, what: &str, check: impl AsyncFn(&Demo) -> bool) {
        let deadline = Instant::now() + LIMIT;
        loop {
            if check(self).await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sluice demo exited ({status}) while waiting for {what}\nstdout:\n{}\nstderr:\n{}",
                    self.output(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstdout:\n{}\nstderr:\n{}",
                self.output(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status and all of stdout.
    async fn terminate(mut self) -> (ExitStatus, String, String) {
        let pid = self.child.id().expect("demo is running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("demo exits after SIGTERM")
            .expect("wait for demo");
        // Let the reader take the last lines.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let output = self.output();
        let log = self.log();
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, output, log)
    }
}

/// The count after `name` in a progress line (`[  3s] events in 10 | … | merged 7 | …`).
fn progress_count(line: &str, name: &str) -> Option<u64> {
    if !line.starts_with('[') {
        return None;
    }
    line.split(" | ").find_map(|part| {
        part.split("] ")
            .last()?
            .strip_prefix(name)?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_where_everything_is_merges_and_stops_on_sigterm() {
    let mut demo = Demo::start("cli").await;
    demo.wait_for("a progress line with merged > 0", async |d: &Demo| {
        d.merged().is_some_and(|n| n > 0)
    })
    .await;
    let output = demo.output();
    let (worker, aggregator) = (demo.worker.clone(), demo.aggregator.clone());
    for url in [
        format!("{worker}/status.html"),
        format!("{worker}/metrics"),
        format!("{aggregator}/metrics"),
        format!("{aggregator}/v1/targets"),
        format!("{aggregator}/v1/targets/{TARGET}/state"),
        format!("{aggregator}/v1/targets/{TARGET}/stream"),
    ] {
        assert!(output.contains(&url), "{url} is not printed:\n{output}");
    }
    let page = format!("{aggregator}/");
    assert!(
        output.lines().any(|l| l.trim_end().ends_with(&page)),
        "the aggregator page {page} is not printed:\n{output}"
    );
    let progress: Vec<&str> = output.lines().filter(|l| l.starts_with('[')).collect();
    let last = progress.last().expect("a progress line");
    for count in ["events in", "delivered", "merged", "reconnects"] {
        assert!(
            progress_count(last, count).is_some(),
            "no {count} in progress line {last:?}"
        );
    }
    assert!(progress_count(last, "events in").unwrap() > 0, "{last}");

    let (status, output, log) = demo.terminate().await;
    assert!(
        status.success(),
        "demo exit {status} after SIGTERM\nstdout:\n{output}\nstderr:\n{log}"
    );
    assert!(
        output.lines().any(|l| l == "stopped"),
        "no `stopped` line:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_from_any_directory_on_its_built_in_configuration() {
    // No --config and no config/ in the working directory (an empty temp dir).
    let mut demo = Demo::start_with("builtin", None).await;
    demo.wait_for("a progress line with merged > 0", async |d: &Demo| {
        d.merged().is_some_and(|n| n > 0)
    })
    .await;
    assert!(
        demo.log()
            .contains("using the built-in example configuration"),
        "{}",
        demo.log()
    );
    let (status, output, log) = demo.terminate().await;
    assert!(
        status.success(),
        "demo exit {status} after SIGTERM\nstdout:\n{output}\nstderr:\n{log}"
    );
}

/// The cells of `<table id="targets">` in a DOM Chromium dumped: header names, then each body
/// row's cell texts (tags stripped).
fn targets_table(dom: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let start = dom
        .find("<table id=\"targets\"")
        .unwrap_or_else(|| panic!("no targets table in the rendered page:\n{dom}"));
    let table = &dom[start..];
    let table = &table[..table.find("</table>").expect("table end")];
    let cells = |row: &str, tag: &str| -> Vec<String> {
        row.split(&format!("<{tag}"))
            .skip(1)
            .map(|cell| {
                let cell = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                let cell = &cell[..cell.find(&format!("</{tag}>")).unwrap_or(cell.len())];
                strip_tags(cell).trim().to_owned()
            })
            .collect()
    };
    let mut rows = table.split("<tr").skip(1);
    let header = cells(rows.next().expect("a header row"), "th");
    let body = rows.map(|row| cells(row, "td")).collect();
    (header, body)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The row of `target` in a rendered targets table, as column name → cell text.
fn row_of(dom: &str, target: &str) -> Vec<(String, String)> {
    let (header, rows) = targets_table(dom);
    let row = rows
        .into_iter()
        .find(|row| row.first().is_some_and(|c| c == target))
        .unwrap_or_else(|| panic!("no row for {target} in the rendered table:\n{dom}"));
    header.into_iter().zip(row).collect()
}

fn cell<'a>(row: &'a [(String, String)], column: &str) -> &'a str {
    row.iter()
        .find(|(name, _)| name == column)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
}

/// Whether the cell of `column` is a count above zero (a placeholder is not).
fn positive(row: &[(String, String)], column: &str) -> bool {
    cell(row, column).parse::<u64>().is_ok_and(|n| n > 0)
}

/// Renders `url` in headless Chromium until the row of [`TARGET`] satisfies `check`; fails
/// with the last row rendered after [`LIMIT`].
async fn rendered_row_until(
    program: &Path,
    profile: &Path,
    url: &str,
    check: impl Fn(&[(String, String)]) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let dom = chromium(program, profile, &["--dump-dom".to_owned(), url.to_owned()]).await;
        let row = row_of(&dom, TARGET);
        if check(&row) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the row of {TARGET} at {url} never showed the live state; last rendered: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs headless Chromium with `args` and returns its stdout; fails the test if it fails.
async fn chromium(program: &Path, profile: &Path, args: &[String]) -> String {
    let mut command = Command::new(program);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("chromium {args:?} did not finish in {BROWSER_LIMIT:?}"))
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Takes a 1280x800 screenshot of `url` and checks it is a non-empty PNG.
async fn screenshot(program: &Path, profile: &Path, url: &str, path: &Path) {
    chromium(
        program,
        profile,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,800".to_owned(),
            url.to_owned(),
        ],
    )
    .await;
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot of {url}: {e}"));
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "screenshot of {url} is not a PNG with content ({} bytes)",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_pages_render_the_live_target_in_headless_chromium() {
    let Some(program) = sluice_testkit::skip::find_program("chromium") else {
        sluice_testkit::skip_or_fail(
            &current_test_name(),
            "chromium is not installed (Debian package chromium)",
        );
        return;
    };
    let mut demo = Demo::start("browser").await;
    let (worker, aggregator) = (demo.worker.clone(), demo.aggregator.clone());
    demo.wait_for("the worker's /readyz", async |d: &Demo| {
        d.answers_200(&format!("{}/readyz", d.worker)).await
    })
    .await;
    demo.wait_for("the aggregator's /readyz", async |d: &Demo| {
        d.answers_200(&format!("{}/readyz", d.aggregator)).await
    })
    .await;
    demo.wait_for("merged deltas in the aggregator", async |d: &Demo| {
        let Some((_, metrics)) = d.get(&format!("{}/metrics", d.aggregator)).await else {
            return false;
        };
        let series =
            format!("sluice_aggregator_deltas_total{{outcome=\"applied\",target=\"{TARGET}\"}}");
        let series_alt =
            format!("sluice_aggregator_deltas_total{{target=\"{TARGET}\",outcome=\"applied\"}}");
        metric_value(&metrics, &series) > 0.0 || metric_value(&metrics, &series_alt) > 0.0
    })
    .await;

    let profile = demo.dir.join("chromium-profile");
    let status_url = format!("{worker}/status.html");
    // A page shows the state as of its load; the demo's target may be reconnecting or its
    // state refetching at that moment, so each page is loaded again until its row shows the
    // live state (bounded by LIMIT), and the last row is reported otherwise.
    rendered_row_until(&program, &profile, &status_url, |row| {
        cell(row, "state") == "streaming" && positive(row, "events") && positive(row, "acked")
    })
    .await;
    let page_url = format!("{aggregator}/");
    rendered_row_until(&program, &profile, &page_url, |row| {
        cell(row, "state") == "synced"
            && positive(row, "version")
            && positive(row, "entities")
            && positive(row, "changes")
    })
    .await;

    screenshot(
        &program,
        &profile,
        &status_url,
        &demo.dir.join("status-page.png"),
    )
    .await;
    screenshot(
        &program,
        &profile,
        &page_url,
        &demo.dir.join("aggregator-page.png"),
    )
    .await;

    let (status, output, log) = demo.terminate().await;
    assert!(
        status.success(),
        "demo exit {status} after SIGTERM\nstdout:\n{output}\nstderr:\n{log}"
    );
}
