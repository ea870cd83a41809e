//! `sluice worker` end to end with `cloudevents: true`: the CloudEvents Kafka binary-mode headers
//! (`ce_*`) on that target's records, and none on a target without the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::{Rig, assert_complete_in_order, ids_of, sim};

const EVENTS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_targets_carry_ce_headers_and_others_do_not() {
    let rig = Rig::new("cloudevents").await;
    let with_ce = sim(EVENTS, 1000.0).await;
    let plain = sim(EVENTS, 1000.0).await;
    rig.target(
        "t-ce",
        &format!("{}?last_event_id=0", with_ce.stream_url()),
        "cloudevents: true",
    );
    rig.target(
        "t-plain",
        &format!("{}?last_event_id=0", plain.stream_url()),
        "",
    );
    let worker = rig.start("").await;

    let records = rig
        .wait_all_ids(&[("t-ce", EVENTS), ("t-plain", EVENTS)])
        .await;
    for target in ["t-ce", "t-plain"] {
        assert_complete_in_order(target, &ids_of(&records, target), EVENTS);
    }

    for rec in records
        .iter()
        .filter(|r| r.header("sluice.target") == "t-ce")
    {
        assert_eq!(rec.header("ce_specversion"), "1.0", "{rec:?}");
        assert_eq!(
            rec.header("ce_id"),
            format!("t-ce:{}", rec.header("sse.id")),
            "{rec:?}"
        );
        assert_eq!(rec.header("ce_source"), "urn:sluice:target:t-ce", "{rec:?}");
        assert_eq!(rec.header("ce_type"), rec.header("sse.event"), "{rec:?}");
        assert!(!rec.header("ce_type").is_empty(), "{rec:?}");
        // RFC 3339 UTC with milliseconds, e.g. 2026-11-24T16:56:25.123Z.
        let time = rec.header("ce_time");
        let b = time.as_bytes();
        assert!(
            b.len() == 24
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
                && b[19] == b'.'
                && b[23] == b'Z'
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit()),
            "ce_time {time:?} in {rec:?}"
        );
        let received_ms: u64 = rec.header("sluice.received_at").parse().unwrap();
        assert_eq!(
            time[20..23],
            format!("{:03}", received_ms % 1000),
            "ce_time is sluice.received_at: {rec:?}"
        );
    }
    for rec in records
        .iter()
        .filter(|r| r.header("sluice.target") == "t-plain")
    {
        assert!(
            rec.headers.keys().all(|name| !name.starts_with("ce_")),
            "no ce_ header without cloudevents: {rec:?}"
        );
    }

    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "graceful exit: {exit:?}\n{log}");
}
