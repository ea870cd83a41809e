//! The operator's console, end to end through the real `sluice worker` on the real broker:
//! `/status.json` filters, sorts and pages on the server with totals by state and reconnect
//! reason, `/status/history.json` samples the last hour, `/status.html` renders the console,
//! headless Chromium clicks a state filter and reads the table it gets, and a fleet's
//! `/status/fleet.json` shows every member with the partitions and targets it owns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "console/cdp.rs"]
mod cdp;
mod rig;

use std::collections::BTreeSet;

use rig::{Rig, Worker, one_target_per_partition, sim};
use serde_json::Value;
use sluice_testkit::skip::{current_test_name, find_program};
use sluice_testkit::{TestKafka, free_port, skip_or_fail, unique_topic};

/// Events the simulator offers (the stream never ends during a test).
const EVENTS: u64 = 1_000_000;
/// Events per second of each streaming target.
const RATE: f64 = 50.0;
/// Targets that stream.
const LIVE: [&str; 3] = ["live-a", "live-b", "live-c"];
/// Targets whose upstream refuses connections (a closed loopback port): never streaming.
const DEAD: [&str; 2] = ["dead-1", "dead-2"];

/// A worker with [`LIVE`] targets on simulators and [`DEAD`] ones on a closed port, once the
/// live ones stream.
async fn console_worker(name: &str) -> (Rig, Worker, Vec<sluice_sim::RunningSim>) {
    let rig = Rig::new(name).await;
    let mut sims = Vec::new();
    for id in LIVE {
        let upstream = sim(EVENTS, RATE).await;
        rig.target(id, &upstream.stream_url(), "");
        sims.push(upstream);
    }
    let closed = free_port().expect("a free loopback port");
    for id in DEAD {
        rig.target(id, &format!("http://127.0.0.1:{closed}/stream"), "");
    }
    let worker = rig.start("").await;
    worker
        .wait_for("the live targets to stream", async |w| {
            let status = query(w, "state=streaming").await;
            let with_events = status["targets"].as_array().is_some_and(|rows| {
                rows.iter()
                    .all(|r| r["events"].as_u64().is_some_and(|e| e > 0))
            });
            status["matched"] == LIVE.len() && with_events
        })
        .await;
    (rig, worker, sims)
}

/// `/status.json?{params}` as JSON (200 asserted).
async fn query(worker: &Worker, params: &str) -> Value {
    let path = format!("/status.json?{params}");
    let (code, body) = worker.get(&path).await.expect("status answers");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

fn ids(status: &Value) -> Vec<String> {
    status["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .map(|r| r["target"].as_str().expect("target id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_filters_sorts_and_pages_on_the_server_and_keeps_an_hour_of_history() {
    let (_rig, worker, _sims) = console_worker("console-query").await;

    let streaming = query(&worker, "state=streaming").await;
    assert_eq!(ids(&streaming), LIVE, "{streaming}");
    assert_eq!(streaming["summary"]["total"], 5, "{streaming}");
    assert_eq!(
        streaming["summary"]["by_state"]["streaming"], 3,
        "{streaming}"
    );
    let by_state = streaming["summary"]["by_state"].as_object().unwrap();
    assert_eq!(by_state.values().filter_map(Value::as_u64).sum::<u64>(), 5);
    for reason in ["eof", "reset", "silent_drop"] {
        assert!(
            streaming["summary"]["reconnects_by_reason"][reason].is_u64(),
            "{reason}: {streaming}"
        );
    }

    // Substring of the id, case-insensitive, the second page of one row.
    let page = query(&worker, "q=DEAD&per_page=1&page=2").await;
    assert_eq!(
        (page["matched"].as_u64(), page["pages"].as_u64()),
        (Some(2), Some(2)),
        "{page}"
    );
    assert_eq!(ids(&page), ["dead-2"], "{page}");

    // Sorted by events, descending: the dead targets (no event) come last.
    let sorted = query(&worker, "sort=events&order=desc").await;
    let events: Vec<u64> = sorted["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["events"].as_u64().unwrap())
        .collect();
    // The live targets' counters move between the sort and the rows' reads, so only the
    // split is exact: the three streaming ones first, the two without events last (by id).
    assert!(events[..3].iter().all(|e| *e > 0), "{events:?}");
    assert_eq!(&events[3..], [0, 0], "{events:?}");
    assert_eq!(&ids(&sorted)[3..], ["dead-1", "dead-2"], "{sorted}");

    // No parameters: every row, as before.
    assert_eq!(ids(&query(&worker, "").await).len(), 5);

    // A wrong parameter is refused with what is accepted.
    let (code, body) = worker.get("/status.json?state=sleeping").await.unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("streaming"), "{body}");

    // The console, server-rendered with the same filter.
    let (code, html) = worker.get("/status.html?state=streaming").await.unwrap();
    assert_eq!(code, 200, "{html}");
    for id in LIVE {
        assert!(html.contains(&format!("<td>{id}</td>")), "{id}:\n{html}");
    }
    assert!(!html.contains("<td>dead-1</td>"), "{html}");
    assert!(html.contains("3 of 5 targets in state streaming"), "{html}");
    assert_eq!(html.matches("<figure").count(), 3, "three charts:\n{html}");

    // The history: a sample every 10 s with the interval's event rate.
    worker
        .wait_for("a history sample with events", async |w| {
            let (_, body) = w.get("/status/history.json").await.unwrap_or_default();
            let history: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            history["samples"].as_array().is_some_and(|samples| {
                samples.iter().any(|s| {
                    s["events_per_second"].as_f64().is_some_and(|r| r > 0.0)
                        && s["latency_p99"].as_f64().is_some_and(|l| l > 0.0)
                })
            })
        })
        .await;
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "worker exit: {exit}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_clicks_a_state_filter_and_reads_the_filtered_table() {
    let Some(program) = find_program("chromium") else {
        skip_or_fail(
            &current_test_name(),
            "chromium is not installed (Debian package chromium)",
        );
        return;
    };
    let (_rig, worker, _sims) = console_worker("console-browser").await;
    let profile = std::env::temp_dir().join(unique_topic("sluice-console-chromium"));
    let url = format!("{}/status.html", worker.base());
    let mut browser = cdp::Browser::open(&program, &profile, &url).await;
    browser
        .wait_for(
            "the console with its state filters",
            "document.readyState === 'complete' && !!document.querySelector('a[data-state=streaming]')",
        )
        .await;
    let before = browser
        .evaluate("document.querySelectorAll('#targets tbody tr').length")
        .await
        .unwrap();
    assert_eq!(before, 5, "every target before filtering");

    browser
        .evaluate("document.querySelector('a[data-state=streaming]').click(); true")
        .await
        .unwrap();
    browser
        .wait_for(
            "the filtered page",
            "location.search.includes('state=streaming') && document.readyState === 'complete' \
             && !!document.querySelector('#matched')",
        )
        .await;
    let read = browser
        .evaluate(
            "JSON.stringify({matched: document.querySelector('#matched').textContent, \
             on: document.querySelector('a.card.on').dataset.state, \
             rows: [...document.querySelectorAll('#targets tbody tr')].map(tr => \
               [tr.cells[0].textContent, tr.cells[1].textContent])})",
        )
        .await
        .unwrap();
    let read: Value = serde_json::from_str(read.as_str().unwrap()).unwrap();
    assert_eq!(
        read["matched"], "3 of 5 targets in state streaming",
        "{read}"
    );
    assert_eq!(read["on"], "streaming", "{read}");
    let rows: Vec<(String, String)> = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = LIVE
        .iter()
        .map(|id| ((*id).to_owned(), "streaming".to_owned()))
        .collect();
    assert_eq!(rows, expected, "{read}");

    // Screenshots for docs/ when asked (SLUICE_CONSOLE_SCREENSHOTS=docs).
    if let Ok(dir) = std::env::var("SLUICE_CONSOLE_SCREENSHOTS") {
        // A few history samples first, so the charts have lines.
        worker
            .wait_for("four history samples", async |w| {
                let (_, body) = w.get("/status/history.json").await.unwrap_or_default();
                let history: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                history["samples"].as_array().is_some_and(|s| s.len() >= 4)
            })
            .await;
        for (name, query) in [
            ("overview", ""),
            ("filtered", "?state=streaming&sort=events&order=desc"),
        ] {
            let path = std::path::Path::new(&dir).join(format!("console-{name}.png"));
            let status = std::process::Command::new(&program)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1400,1100",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    profile.join("shots").display()
                ))
                .arg(format!("--screenshot={}", path.display()))
                .arg(format!("{url}{query}"))
                .status()
                .expect("chromium screenshot");
            assert!(status.success(), "screenshot {name}: {status}");
        }
    }
    drop(browser);
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "worker exit: {exit}\n{log}");
}

/// Fleet partitions of the view test.
const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_members_view_shows_who_owns_which_partitions_and_targets() {
    if !rig::real_broker_or_skip(
        &current_test_name(),
        "the group's description and cooperative rebalances need the real broker",
    ) {
        return;
    }
    let rig = Rig::with_kafka("console-fleet", TestKafka::start().expect("test kafka")).await;
    let targets = one_target_per_partition(PARTITIONS);
    let mut sims = Vec::new();
    for id in &targets {
        let upstream = sim(EVENTS, RATE).await;
        rig.target(id, &upstream.stream_url(), "");
        sims.push(upstream);
    }
    let group = unique_topic("console-fleet.group");
    let checkpoints = unique_topic("console-fleet.checkpoints");
    let extra =
        format!("fleet:\n  group_id: {group}\n  partitions: {PARTITIONS}\n  session_timeout: 3s\n");
    let env = [("SLUICE__TOPICS__CHECKPOINTS", checkpoints.as_str())];
    let first = rig.start_with_env(&extra, &env).await;
    let second = rig.start_with_env(&extra, &env).await;

    let fleet_of = async |w: &Worker| -> Value {
        match w.get("/status/fleet.json").await {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    };
    // Settled: two members, every partition owned once, every target counted once.
    let settled = |view: &Value| -> bool {
        let Some(members) = view["members"].as_array() else {
            return false;
        };
        let mut owned = Vec::new();
        for m in members {
            owned.extend(
                m["partitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64),
            );
        }
        owned.sort_unstable();
        members.len() == 2
            && owned == (0..i64::from(PARTITIONS)).collect::<Vec<_>>()
            && members
                .iter()
                .filter_map(|m| m["targets"].as_u64())
                .sum::<u64>()
                == 4
            && view["unowned_targets"] == 0
    };
    for worker in [&first, &second] {
        worker
            .wait_for(
                "the fleet view to show two members owning everything",
                async |w| settled(&fleet_of(w).await),
            )
            .await;
    }
    let view = fleet_of(&first).await;
    let members = view["members"].as_array().unwrap();
    let me: Vec<&Value> = members
        .iter()
        .filter(|m| m["this_worker"] == true)
        .collect();
    assert_eq!(me.len(), 1, "exactly one member is this worker: {view}");
    let my_name = me[0]["client_id"].as_str().unwrap().to_owned();
    assert_eq!(view["this_worker"], my_name, "{view}");

    // Each running target's row names its owner: this worker, and the targets it runs are
    // those its member's partitions hold.
    first
        .wait_for(
            "the first worker's targets to match its member's count",
            async |w| {
                let status = query(w, "").await;
                let rows = status["targets"].as_array().cloned().unwrap_or_default();
                rows.len() as u64 == me[0]["targets"].as_u64().unwrap_or(0)
                    && rows.iter().all(|r| r["owner"] == my_name.as_str())
            },
        )
        .await;
    let others: BTreeSet<String> = ids(&query(&second, "").await).into_iter().collect();
    let mine: BTreeSet<String> = ids(&query(&first, "").await).into_iter().collect();
    assert!(mine.is_disjoint(&others), "{mine:?} / {others:?}");

    // The fleet's metrics: between the two, every partition and target is owned once, every
    // target was handed over (started from an assignment) and its handover timed.
    let metric_sum =
        async |name: &str| -> f64 { first.metric(name).await + second.metric(name).await };
    for (name, expected) in [
        ("sluice_fleet_owned_partitions", f64::from(PARTITIONS)),
        ("sluice_fleet_owned_targets", 4.0),
        ("sluice_fleet_unowned_targets", 0.0),
    ] {
        assert_eq!(metric_sum(name).await, expected, "{name}");
    }
    assert_eq!(first.metric("sluice_fleet_targets").await, 4.0);
    assert!(first.metric("sluice_fleet_rebalances_total").await >= 1.0);
    assert!(metric_sum("sluice_fleet_handovers_total").await >= 4.0);
    first
        .wait_for("every handover to be timed", async |_| {
            metric_sum("sluice_fleet_handover_seconds_count").await >= 4.0
        })
        .await;

    // Any target's owner, from either worker: the member whose worker runs it.
    let names = [
        (first.get("/status/fleet.json").await, &mine),
        (second.get("/status/fleet.json").await, &others),
    ]
    .map(|(answer, runs)| {
        let view: Value = serde_json::from_str(&answer.expect("fleet view").1).unwrap();
        (
            view["this_worker"].as_str().unwrap().to_owned(),
            runs.clone(),
        )
    });
    for id in &targets {
        let (code, body) = second
            .get(&format!("/status/fleet.json?target={id}"))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        let runner = names
            .iter()
            .find(|(_, runs)| runs.contains(id))
            .map(|(name, _)| name.as_str());
        assert_eq!(answer["owner"].as_str(), runner, "{id}: {answer}");
    }

    // The console shows the fleet table.
    let (_, html) = first.get("/status.html").await.unwrap();
    assert!(html.contains("id=\"fleet\""), "{html}");
    assert!(
        html.contains(&format!("<td>{my_name} (this worker)</td>")),
        "{html}"
    );

    drop(first);
    drop(second);
    drop(sims);
}
