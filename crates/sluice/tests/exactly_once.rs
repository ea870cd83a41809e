//! `delivery.mode: exactly_once` end to end on a real broker (transactions, fencing and
//! `read_committed` need one: librdkafka's mock cluster does not fence): the real worker
//! binary, the simulator (ids 1, 2, … that it replays after `Last-Event-ID`), killed with
//! SIGKILL while a transaction is open, then started again: a `read_committed` reader of the
//! events topic sees every id exactly once, in order; the checkpoint names the last one. And a
//! worker frozen (SIGSTOP) while a second one takes its transactional ids: woken (SIGCONT), it
//! is fenced, its target stops, and still every id is there exactly once. And the broker
//! killed (SIGKILL) with a transaction open and restarted: every id exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::{Rig, ids_of};

const TARGET: &str = "t";
const EVENTS: u64 = 20_000;
const EXACTLY_ONCE: &str = "delivery:\n  mode: exactly_once\n  commit_interval: 50ms\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_transaction_and_restarted_leaves_every_event_once_for_read_committed()
{
    if !rig::real_broker_or_skip(
        "a_worker_killed_mid_transaction_and_restarted_leaves_every_event_once_for_read_committed",
        "transactions, fencing and read_committed need a real broker",
    ) {
        return;
    }
    let rig = Rig::new("eos-kill").await;
    // 2,000 events/s: a transaction of about 100 records is open at any time.
    let sim = rig::sim(EVENTS, 2_000.0).await;
    // From the first id on (a stream without `Last-Event-ID` starts at the feed's head).
    rig.target(TARGET, &format!("{}?last_event_id=0", sim.stream_url()), "");
    let worker = rig.start(EXACTLY_ONCE).await;
    // A third of the events committed, then SIGKILL: its open transaction stays open on the
    // broker until the restarted worker's lane takes its transactional id.
    rig.records_until(|records| ids_of(records, TARGET).len() as u64 >= EVENTS / 3)
        .await;
    let log = worker.kill().await;
    assert!(
        log.contains("exactly-once delivery: one transactional producer per checkpoint partition"),
        "{log}"
    );
    let worker = rig.start(EXACTLY_ONCE).await;
    rig.wait_all_ids(&[(TARGET, EVENTS)]).await;
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");

    // Everything committed is in: read it all again (read_committed, librdkafka's default).
    assert_exactly_once(&rig).await;
    let checkpoints = rig.checkpoints().await;
    assert_eq!(
        checkpoints.get(TARGET).map(String::as_str),
        Some(EVENTS.to_string().as_str()),
        "the checkpoint covers exactly the committed events"
    );
}

/// The ids of `TARGET` a `read_committed` reader sees up to the last one, checked to be
/// exactly 1..=`EVENTS` in order.
async fn assert_exactly_once(rig: &Rig) {
    let records = rig
        .records_until(|records| ids_of(records, TARGET).contains(&EVENTS))
        .await;
    let ids = ids_of(&records, TARGET);
    let first_wrong = ids.iter().zip(1..).position(|(id, want)| *id != want);
    assert!(
        ids.len() as u64 == EVENTS && first_wrong.is_none(),
        "every id exactly once, in order, for a read_committed reader: {} records, the first \
         out of place at index {first_wrong:?} ({:?})",
        ids.len(),
        first_wrong.map(|i| &ids[i.saturating_sub(2)..(i + 3).min(ids.len())])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_whose_transactional_ids_were_taken_over_is_fenced_and_adds_nothing() {
    if !rig::real_broker_or_skip(
        "a_paused_worker_whose_transactional_ids_were_taken_over_is_fenced_and_adds_nothing",
        "transactions, fencing and read_committed need a real broker",
    ) {
        return;
    }
    let rig = Rig::new("eos-zombie").await;
    let sim = rig::sim(EVENTS, 2_000.0).await;
    rig.target(TARGET, &format!("{}?last_event_id=0", sim.stream_url()), "");
    let zombie = rig.start(EXACTLY_ONCE).await;
    rig.records_until(|records| ids_of(records, TARGET).len() as u64 >= EVENTS / 4)
        .await;
    // Frozen with a transaction open, as a long GC pause or a stopped VM would be; a second
    // worker with the same config takes its transactional ids (fencing it, aborting the open
    // transaction) and goes on from the committed checkpoint.
    zombie.freeze(true);
    let successor = rig.start(EXACTLY_ONCE).await;
    rig.records_until(|records| ids_of(records, TARGET).len() as u64 >= EVENTS / 2)
        .await;
    // Woken up: its next transaction fails (fenced) and its target stops before the events
    // it could not commit; nothing of it becomes visible.
    zombie.freeze(false);
    zombie
        .wait_for(
            "the zombie's target to stop, fenced",
            async |w: &rig::Worker| {
                let status = w.status().await;
                let rows = status["targets"].as_array().cloned().unwrap_or_default();
                rows.iter()
                    .all(|row| row["id"] != TARGET || row["delivery"] == "failed")
            },
        )
        .await;
    rig.wait_all_ids(&[(TARGET, EVENTS)]).await;
    let (status, log) = successor.terminate().await;
    assert!(status.success(), "{log}");
    let log = zombie.kill().await;
    assert!(
        log.matches("kafka refused an event for good").count() == 1,
        "one error for the stopped target, not one per record"
    );
    assert!(log.contains("fenced"), "{log}");
    assert_exactly_once(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_run_leaves_every_event_once_for_read_committed() {
    if !rig::real_broker_or_skip(
        "a_broker_killed_and_restarted_mid_run_leaves_every_event_once_for_read_committed",
        "transactions, fencing and read_committed need a real broker",
    ) {
        return;
    }
    let kafka = sluice_testkit::TestKafka::private().expect("a private broker");
    let rig = Rig::with_kafka("eos-broker", kafka).await;
    let sim = rig::sim(EVENTS, 2_000.0).await;
    rig.target(TARGET, &format!("{}?last_event_id=0", sim.stream_url()), "");
    let worker = rig.start(EXACTLY_ONCE).await;
    rig.records_until(|records| ids_of(records, TARGET).len() as u64 >= EVENTS / 4)
        .await;
    // SIGKILL of the broker with a transaction open: its commit cannot finish until the
    // broker is back (well within the transaction timeout); the lane holds its records and
    // commits them then, or aborts and sends them again.
    rig.kafka
        .broker_down(sluice_testkit::Outage::Kill)
        .await
        .expect("broker down");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    rig.kafka
        .broker_up(sluice_testkit::Outage::Kill)
        .await
        .unwrap_or_else(|e| panic!("broker up: {e}\n{}", rig.kafka.broker_log_tail(40)));
    // Every event committed: its checkpoint (written in the same transactions) at the last.
    worker
        .wait_for("every event committed", async |w: &rig::Worker| {
            let row = w.row(TARGET).await;
            row["checkpoint"]
                .as_str()
                .and_then(|c| c.parse::<u64>().ok())
                == Some(EVENTS)
        })
        .await;
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
    assert_exactly_once(&rig).await;
}
