//! Owner epochs in checkpoint records, end to end on Kafka: a zombie's late checkpoint (a
//! record of an older owner landing after the running owner's, as from a worker paused past its
//! session or cut off from the broker) is written over by the owner, so the resume point never
//! moves back past the owner's; a record of a newer owner stops the target here; and a
//! checkpoint in the format before owner stamps (a bare event id) is still resumed from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rig::{LIMIT, Rig, Worker, assert_complete_in_order, ids_of};
use sluice_config::TargetId;
use sluice_publish::{Publisher, Stamp};
use tokio::time::Instant;

const EVENTS: u64 = 50;

/// The last checkpoint record of every target: event id, format, epoch, owner.
async fn last_records(rig: &Rig) -> HashMap<String, (String, u32, u64, Option<String>)> {
    rig::last_checkpoint_records(&rig.kafka, &rig.checkpoints).await
}

/// Polls the checkpoint topic until the last record of `target` satisfies `check`.
async fn until_last(
    rig: &Rig,
    target: &str,
    what: &str,
    check: impl Fn(&(String, u32, u64, Option<String>)) -> bool,
) -> (String, u32, u64, Option<String>) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let last = last_records(rig).await;
        if let Some(record) = last.get(target)
            && check(record)
        {
            return record.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker streaming one target of `EVENTS` events to its end (the upstream then goes quiet,
/// so no paced checkpoint write follows), with its checkpoint at the last id.
async fn quiet_target(name: &str) -> (Rig, sluice_sim::RunningSim, Worker) {
    let rig = Rig::new(name).await;
    let sim = rig::sim(EVENTS, 500.0).await;
    rig.target(
        "prices",
        &format!("{}?last_event_id=0", sim.stream_url()),
        "",
    );
    let worker = rig.start("").await;
    let records = rig.wait_all_ids(&[("prices", EVENTS)]).await;
    assert_complete_in_order("prices", &ids_of(&records, "prices"), EVENTS);
    until_last(&rig, "prices", "the checkpoint at the last id", |r| {
        r.0 == EVENTS.to_string()
    })
    .await;
    (rig, sim, worker)
}

async fn write_as(rig: &Rig, target: &str, event_id: &str, epoch: u64, owner: &str) {
    let publisher = Publisher::new(&rig.kafka.producer_config()).expect("producer");
    let target: TargetId = target.parse().expect("target id");
    let stamp = Stamp {
        epoch,
        owner: Arc::from(owner),
        mark: sluice_publish::Mark::Plain,
    };
    publisher
        .write_checkpoint(&rig.checkpoints, &target, event_id, &stamp)
        .await
        .expect("write a checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombies_late_checkpoint_is_written_over_so_the_resume_point_never_moves_back() {
    let (rig, _sim, worker) = quiet_target("epochs-zombie").await;
    let (_, format, epoch, owner) = last_records(&rig).await["prices"].clone();
    assert_eq!(format, sluice_publish::CHECKPOINT_FORMAT);
    assert_eq!(epoch, 1, "the first run of a target has epoch 1");
    assert_eq!(
        worker.row("prices").await["owner_epoch"],
        1,
        "shown by /status"
    );
    let owner = owner.expect("stamped with its writer");
    assert!(
        owner.ends_with(&format!("#{}", worker.pid())),
        "the owner names the worker process: {owner}"
    );

    // The zombie (the previous owner, epoch 0) wakes up and writes the point it had reached.
    write_as(&rig, "prices", "10", 0, "zombie#1").await;
    let last = until_last(&rig, "prices", "the owner's checkpoint last again", |r| {
        r.2 == 1
    })
    .await;
    assert_eq!(
        last.0,
        EVENTS.to_string(),
        "the resume point did not move back"
    );
    assert_eq!(last.3.as_deref(), Some(owner.as_str()));
    assert_eq!(worker.metric("sluice_checkpoint_rewrites_total").await, 1.0);

    // A restart resumes from the owner's point, not the zombie's older one.
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
    let restarted = rig.start("").await;
    restarted
        .wait_for("the restarted target's resume point", async |w: &Worker| {
            w.row("prices").await["checkpoint"] == EVENTS.to_string().as_str()
        })
        .await;
    assert_eq!(
        restarted.row("prices").await["owner_epoch"],
        2,
        "the restart runs above every epoch read"
    );
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_owner_stops_the_target_here() {
    let (rig, _sim, worker) = quiet_target("epochs-newer").await;
    write_as(&rig, "prices", &EVENTS.to_string(), 5, "other-worker#9").await;
    worker
        .wait_for("the superseded target to stop", async |w: &Worker| {
            let status = w.status().await;
            status["targets"]
                .as_array()
                .is_some_and(|rows| rows.iter().all(|r| r["target"] != "prices"))
        })
        .await;
    assert_eq!(worker.metric("sluice_targets_superseded_total").await, 1.0);
    assert!(
        worker.log().contains("a newer owner runs this target"),
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_the_format_before_owner_stamps_is_resumed_from() {
    let rig = Rig::new("epochs-format0").await;
    let sim = rig::sim(EVENTS, 500.0).await;
    // A worker of the earlier format wrote a bare event id, no headers.
    let plain: rdkafka::producer::FutureProducer =
        rig.kafka.producer_config().create().expect("producer");
    plain
        .send(
            rdkafka::producer::FutureRecord::to(&rig.checkpoints)
                .partition(0)
                .key("prices")
                .payload("20"),
            Duration::from_secs(10),
        )
        .await
        .expect("write a format-0 checkpoint");
    rig.target(
        "prices",
        &format!("{}?last_event_id=0", sim.stream_url()),
        "",
    );
    let worker = rig.start("").await;
    let records = rig
        .records_until(|r| ids_of(r, "prices").last() == Some(&EVENTS))
        .await;
    assert_eq!(
        ids_of(&records, "prices"),
        (21..=EVENTS).collect::<Vec<_>>(),
        "resumed right after the format-0 checkpoint"
    );
    let last = until_last(&rig, "prices", "a stamped checkpoint", |r| {
        r.0 == EVENTS.to_string()
    })
    .await;
    assert_eq!(
        (last.1, last.2),
        (sluice_publish::CHECKPOINT_FORMAT, 1),
        "the new run writes the current format, above epoch 0"
    );
    drop(worker);
}
