//! Targets started and stopped while the worker runs (`sluice_worker::Control`, the seam the
//! fleet uses), in-process, over real HTTP (the simulator) and Kafka (the mock cluster, or the
//! real broker named by `SLUICE_TEST_KAFKA`): `/status` and `/metrics` follow the registry, and
//! a stopped target's checkpoint is final.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::{LIMIT, Rig, ids_of, sim};
use serde_json::Value;
use sluice_config::{TargetConfig, TargetId};
use sluice_worker::{Control, ControlError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The ids of the rows `/status` shows.
async fn status_targets(http: &reqwest::Client, base: &str) -> Vec<String> {
    let status: Value = http
        .get(format!("{base}/status"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<String> = status["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .map(|row| row["target"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn id(text: &str) -> TargetId {
    text.parse().unwrap()
}

#[tokio::test]
async fn targets_start_and_stop_at_run_time_and_a_stopped_targets_checkpoint_is_final() {
    let rig = Rig::new("supervisor").await;
    let sim = sim(1_000_000, 200.0).await;
    let url = format!("{}?last_event_id=0", sim.stream_url());
    rig.target("a", &url, "");
    rig.target("b", &url, "");
    // The files are not watched: `b`'s file stays, and only the control starts it.
    let mut config = sluice_config::load(&rig.worker_yaml(0, "targets_watch: 0s\n")).unwrap();
    // `b` is not configured at start: it is started at run time, as the fleet will.
    let b: TargetConfig = {
        let at = config.targets.iter().position(|t| t.id == id("b")).unwrap();
        config.targets.remove(at)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let http = reqwest::Client::new();
    let (control, inbox) = Control::channel();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(sluice_worker::run_controlled(
        config,
        Some(listener),
        shutdown.clone(),
        inbox,
    ));

    rig.wait_all_ids(&[("a", 20)]).await;
    assert_eq!(control.targets().await.unwrap(), [id("a")]);
    assert_eq!(status_targets(&http, &base).await, ["a"]);
    assert!(!metrics(&http, &base).await.contains("target=\"b\""));

    control.start(b.clone(), None).await.unwrap();
    assert!(matches!(
        control.start(b, None).await,
        Err(ControlError::AlreadyRunning(running)) if running == id("b")
    ));
    rig.wait_all_ids(&[("a", 40), ("b", 20)]).await;
    assert_eq!(control.targets().await.unwrap(), [id("a"), id("b")]);
    assert_eq!(status_targets(&http, &base).await, ["a", "b"]);
    let text = metrics(&http, &base).await;
    assert!(
        text.contains("sluice_events_received_total{target=\"b\"}"),
        "{text}"
    );
    assert!(text.contains("sluice_targets 2\n"), "{text}");

    // Stopping `a` returns once its final checkpoint is stored.
    let stopped = control.stop(&id("a")).await.unwrap();
    let checkpoint = stopped.checkpoint.expect("a final checkpoint");
    assert_eq!(rig.checkpoints().await.get("a"), Some(&checkpoint));
    assert_eq!(control.targets().await.unwrap(), [id("b")]);
    assert_eq!(status_targets(&http, &base).await, ["b"]);
    let text = metrics(&http, &base).await;
    assert!(!text.contains("target=\"a\""), "{text}");
    assert!(text.contains("sluice_targets 1\n"), "{text}");
    assert!(matches!(
        control.stop(&id("a")).await,
        Err(ControlError::NotRunning(_))
    ));

    // Final: while `b` goes on, `a` sends nothing more, and its last record is the checkpoint.
    let b_now = sluice_testkit::metric_value(
        &metrics(&http, &base).await,
        "sluice_events_received_total{target=\"b\"}",
    ) as u64;
    let records = rig.wait_all_ids(&[("b", b_now + 40)]).await;
    let a_ids = ids_of(&records, "a");
    let last: u64 = checkpoint.parse().unwrap();
    assert_eq!(
        a_ids.iter().max(),
        Some(&last),
        "records of a after its final checkpoint"
    );
    assert_eq!(rig.checkpoints().await.get("a"), Some(&checkpoint));

    shutdown.cancel();
    tokio::time::timeout(LIMIT, worker)
        .await
        .expect("the worker stops within the limit")
        .unwrap()
        .expect("a clean shutdown");
    assert!(rig.checkpoints().await.contains_key("b"));
    assert!(matches!(
        control.targets().await,
        Err(ControlError::WorkerGone)
    ));
}

/// The `/status` row of `target`.
async fn status_row(http: &reqwest::Client, base: &str, target: &str) -> Option<Value> {
    let status: Value = http
        .get(format!("{base}/status"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .find(|row| row["target"] == target)
        .cloned()
}

#[tokio::test]
async fn a_paused_target_stops_with_its_final_checkpoint_stays_shown_and_resumes_from_it() {
    let rig = Rig::new("pause").await;
    let sim = sim(1_000_000, 200.0).await;
    let url = format!("{}?last_event_id=0", sim.stream_url());
    rig.target("a", &url, "");
    rig.target("b", &url, "");
    let config = sluice_config::load(&rig.worker_yaml(0, "")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let http = reqwest::Client::new();
    let (control, inbox) = Control::channel();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(sluice_worker::run_controlled(
        config,
        Some(listener),
        shutdown.clone(),
        inbox,
    ));
    rig.wait_all_ids(&[("a", 20), ("b", 20)]).await;

    // Pausing returns once the final checkpoint is stored; the target stays defined and shown.
    let stopped = control.pause(&id("a")).await.unwrap();
    let checkpoint = stopped.checkpoint.expect("a final checkpoint");
    assert_eq!(rig.checkpoints().await.get("a"), Some(&checkpoint));
    assert_eq!(control.targets().await.unwrap(), [id("b")]);
    assert_eq!(control.paused().await.unwrap(), [id("a")]);
    let row = status_row(&http, &base, "a").await.expect("a paused row");
    assert_eq!(row["state"], "stopped", "{row}");
    assert_eq!(row["delivery"], "paused", "{row}");
    assert_eq!(row["checkpoint"], checkpoint.as_str(), "{row}");
    assert!(matches!(
        control.pause(&id("a")).await,
        Err(ControlError::NotRunning(_))
    ));
    assert!(matches!(
        control.resume(&id("b")).await,
        Err(ControlError::NotPaused(_))
    ));

    // While paused, `a` sends nothing past its checkpoint.
    let b_now = sluice_testkit::metric_value(
        &metrics(&http, &base).await,
        "sluice_events_received_total{target=\"b\"}",
    ) as u64;
    let records = rig.wait_all_ids(&[("b", b_now + 40)]).await;
    let last: u64 = checkpoint.parse().unwrap();
    assert_eq!(ids_of(&records, "a").iter().max(), Some(&last));

    // Resumed, it goes on from its checkpoint: every id, in order, none lost.
    control.resume(&id("a")).await.unwrap();
    assert_eq!(control.paused().await.unwrap(), Vec::<TargetId>::new());
    assert_eq!(control.targets().await.unwrap(), [id("a"), id("b")]);
    let records = rig.wait_all_ids(&[("a", last + 40)]).await;
    let a_ids = ids_of(&records, "a");
    let newest = a_ids.iter().copied().max().unwrap_or(0);
    assert!(newest >= last + 40, "{newest} < {last} + 40");
    rig::assert_complete_in_order("a", &a_ids, newest);
    // From the checkpoint, not from the upstream's start: nothing sent twice.
    assert_eq!(
        rig::first_occurrences(&a_ids).len(),
        a_ids.len(),
        "a resent ids"
    );
    let row = status_row(&http, &base, "a").await.expect("a row");
    assert_ne!(row["state"], "stopped", "{row}");
    assert_eq!(status_targets(&http, &base).await, ["a", "b"]);

    shutdown.cancel();
    tokio::time::timeout(LIMIT, worker)
        .await
        .expect("the worker stops within the limit")
        .unwrap()
        .expect("a clean shutdown");
}
