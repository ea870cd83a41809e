//! Delivery under the paused clock: what reaches Kafka, in order, and the checkpoints that
//! follow it (first at once, then paced; never past an unacknowledged event).

use super::*;

#[tokio::test(start_paused = true)]
async fn an_id_with_control_characters_is_published_and_never_becomes_the_resume_point() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\nid: 2\u{1}x\ndata: b\n\n");
    t.kafka.until_events(2).await;
    drop(body);
    // The event is in Kafka with its id as sent; the reconnect resumes after the last id that
    // can be a header value, so "b" is replayed (a duplicate), never lost.
    let next = t.attempt().await;
    assert_eq!(next.last_event_id, "1");
    assert_eq!(t.kafka.events(), ["a", "b"]);
    let ids: Vec<String> = t
        .kafka
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Sent::Event { id, .. } => Some(id.clone()),
            Sent::Checkpoint { .. } => None,
        })
        .collect();
    assert_eq!(ids, ["1", "2\u{1}x"]);
    assert!(
        t.kafka.checkpoints().iter().all(|(id, _)| id == "1"),
        "{:?}",
        t.kafka.checkpoints()
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_that_cannot_be_sent_starts_the_target_without_it() {
    let mut t = Target::start(config(), FakeKafka::acking(), Some("bad\u{7f}"));
    assert_eq!(t.attempt().await.last_event_id, "");
}

#[tokio::test(start_paused = true)]
async fn a_busy_target_checkpoints_every_second_so_a_crash_replays_little() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let started = Instant::now();
    let body = t.attempt().await.open();
    // 200 events a second for 10 s.
    for i in 1..=2000 {
        body.send(&format!("id: {i}\ndata: {i}\n\n"));
        if i % 20 == 0 {
            sleep(Duration::from_millis(100)).await;
        }
    }
    let checkpoints = t.kafka.checkpoints();
    for pair in checkpoints.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= crate::target::checkpoint::CHECKPOINT_MIN_INTERVAL,
            "{checkpoints:?}"
        );
        assert!(gap <= Duration::from_millis(1100), "{checkpoints:?}");
    }
    assert!(checkpoints[0].1 - started < Duration::from_millis(50));
    assert!((9..=11).contains(&checkpoints.len()), "{checkpoints:?}");
    drop(body);
}

/// A zombie's late checkpoint landed after this run's: the target writes its own again at
/// once, unmoved, stamped with its run's epoch, so the last record of the target is this run's.
#[tokio::test(start_paused = true)]
async fn a_nudge_writes_the_unmoved_checkpoint_again_with_the_runs_epoch() {
    let mut t = Target::start(config(), FakeKafka::acking(), Some("5"));
    let body = t.attempt().await.open();
    body.send("id: 6\ndata: a\n\n");
    t.kafka.until_events(1).await;
    let mut changed = t.kafka.changed.subscribe();
    changed
        .wait_for(|_| t.kafka.checkpoints().len() == 1)
        .await
        .unwrap();
    // Quiet now: no paced write would come for as long as nothing moves.
    sleep(Duration::from_secs(30)).await;
    assert_eq!(t.kafka.checkpoints().len(), 1);
    t.rewrite.nudge();
    changed
        .wait_for(|_| t.kafka.checkpoints().len() == 2)
        .await
        .unwrap();
    let stamped: Vec<(String, u64)> = t
        .kafka
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Sent::Checkpoint { id, epoch, .. } => Some((id.clone(), *epoch)),
            Sent::Event { .. } => None,
        })
        .collect();
    assert_eq!(stamped, [("6".to_owned(), 7), ("6".to_owned(), 7)]);
    drop(body);
}

/// A planned fleet handover: once handing over, the target's checkpoint writes are offers (the
/// first at once, though nothing moved), and its stop writes a release even when the checkpoint
/// did not move since: the new owner waits for that release and resumes from it.
#[tokio::test(start_paused = true)]
async fn a_target_handing_over_offers_its_checkpoint_and_releases_it_when_stopped() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let body = t.attempt().await.open();
    body.send("id: 6\ndata: a\n\n");
    t.kafka.until_events(1).await;
    let mut changed = t.kafka.changed.subscribe();
    changed
        .wait_for(|_| t.kafka.checkpoints().len() == 1)
        .await
        .unwrap();
    t.status
        .handing_over
        .store(true, std::sync::atomic::Ordering::Relaxed);
    t.rewrite.nudge();
    changed
        .wait_for(|_| t.kafka.checkpoints().len() == 2)
        .await
        .unwrap();
    sleep(Duration::from_secs(6)).await;
    t.stop.stop();
    t.task.await.unwrap();
    let marks: Vec<(String, sluice_publish::Mark)> = t
        .kafka
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Sent::Checkpoint { id, mark, .. } => Some((id.clone(), *mark)),
            Sent::Event { .. } => None,
        })
        .collect();
    use sluice_publish::Mark::{Offer, Plain, Release};
    assert_eq!(
        marks,
        [
            ("6".to_owned(), Plain),
            ("6".to_owned(), Offer),
            ("6".to_owned(), Release),
        ],
        "offers while handing over, then a release of the unchanged final checkpoint"
    );
    drop(body);
}

/// A record the producer refuses at once (its topic's partition count is being read) is sent
/// again before the records after it, which wait behind it: before, they went out first.
#[tokio::test(start_paused = true)]
async fn a_record_refused_at_once_is_sent_again_before_the_ones_after_it() {
    let kafka = FakeKafka::acking();
    kafka
        .refusing
        .lock()
        .unwrap()
        .extend([("a".to_owned(), 2), ("c".to_owned(), 1)]);
    let t = Target::start(config(), kafka.clone(), None);
    let mut t = t;
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\nid: 4\ndata: d\n\n");
    kafka.until_events(4).await;
    assert_eq!(kafka.events(), ["a", "b", "c", "d"]);
    assert_eq!(t.status.delivery_errors.get(), 3);
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn failed_deliveries_are_sent_again_in_order() {
    let kafka = FakeKafka::acking();
    // "b" fails twice, "c" to "e" once: sent again each on its own timer, "c".."e" would
    // overtake "b".
    kafka.failing.lock().unwrap().extend([
        ("b".to_owned(), 2),
        ("c".to_owned(), 1),
        ("d".to_owned(), 1),
        ("e".to_owned(), 1),
    ]);
    let mut t = Target::start(config(), kafka.clone(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\n");
    kafka.until_events(1).await;
    body.send("id: 2\ndata: b\n\nid: 3\ndata: c\n\nid: 4\ndata: d\n\nid: 5\ndata: e\n\n");
    kafka.until_events(5).await;
    assert_eq!(kafka.events(), ["a", "b", "c", "d", "e"]);
    assert_eq!(t.status.delivery_errors.get(), 5);
    body.send("id: 6\ndata: f\n\n");
    kafka.until_events(6).await;
    assert_eq!(t.status.delivery(), crate::Delivery::Ok);
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn a_target_blocked_on_a_full_producer_waits_instead_of_polling() {
    let kafka = FakeKafka::acking();
    kafka.full.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut t = Target::start(config(), kafka.clone(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\n");
    sleep(Duration::from_secs(10)).await;
    // Nothing of its own in flight: it waits for another answer (none comes here), trying
    // again every 2 s at most; a 10 ms poll would have tried a thousand times.
    let refused = kafka.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=7).contains(&refused), "{refused} sends refused");
    assert_eq!(t.status.delivery(), crate::Delivery::Paused);
    kafka
        .full
        .store(false, std::sync::atomic::Ordering::Relaxed);
    kafka.until_events(1).await;
    drop(body);
}
