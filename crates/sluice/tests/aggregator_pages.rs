//! Paginated base states end to end: simulator → `sluice worker` → Kafka → `sluice aggregator`,
//! the aggregator fetching each target's base state a page at a time from the simulator's
//! `/v1/snapshot/pages` over real HTTP, in every pagination mode, while the feed moves. Each
//! target's state must equal the simulator's truth exactly; a target whose base state has more
//! pages than its `max_pages` gets no state, and the log says which target and which bound.
//!
//! Kafka is the mock cluster, or the broker in `SLUICE_TEST_KAFKA` under `scripts/test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::{Rig, Worker, assert_converges};
use sluice_sim::SimConfig;
use sluice_testkit::TestKafka;

/// A target's `aggregate` section with `pagination` (YAML lines at its indentation).
fn paged_aggregate(url: &str, pagination: &str) -> String {
    format!(
        "aggregate:\n  base:\n    url: {url}\n    items: /items\n    key: /key\n    version: /version\n\
         \x20   pagination:\n{pagination}\
         \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n\
         \x20 delete_events: [delete]\n  reset_events: [reset]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_paged_in_every_mode_converge_to_the_simulators_truth() {
    let rig = Rig::with_kafka("agg-pages", TestKafka::start().expect("test kafka")).await;
    let sim = rig::sim_with(SimConfig {
        entities: 200,
        rate: 400.0,
        max_events: Some(6_000),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    // About 200 entities, 25 to a page: each base state is several pages, fetched while the
    // feed moves (the deltas after the first page's version are applied over the pages).
    let targets = [
        (
            "by-body-link",
            format!("{}&page_size=25", sim.pages_url("body")),
            "      mode: next_link\n      next: /next\n",
        ),
        (
            "by-link-header",
            format!("{}&page_size=25", sim.pages_url("header")),
            "      mode: link_header\n",
        ),
        (
            "by-cursor",
            format!("{}&page_size=25", sim.pages_url("cursor")),
            "      mode: cursor\n      cursor: /next_cursor\n      param: cursor\n",
        ),
        (
            "by-page",
            sim.pages_url("page"),
            "      mode: page\n      param: page\n      size_param: page_size\n      size: 25\n",
        ),
        (
            "by-offset",
            sim.pages_url("offset"),
            "      mode: offset\n      param: offset\n      size_param: limit\n      size: 25\n",
        ),
        (
            "capped",
            format!("{}&page_size=25", sim.pages_url("body")),
            "      mode: next_link\n      next: /next\n      max_pages: 2\n",
        ),
    ];
    for (id, url, pagination) in &targets {
        rig.target(id, &sim.stream_url(), &paged_aggregate(url, pagination));
    }
    // Not ready: the capped target never gets a state.
    let aggregator = rig.start_aggregator("", false).await;
    let worker = rig.start("").await;

    aggregator
        .wait_for("the capped target refused", async |a: &Worker| {
            a.log().contains(
                "target capped: the base state has more than 2 pages \
                 (aggregate.base.pagination.max_pages)",
            )
        })
        .await;
    sim.wait_for_head(6_000).await;
    for (id, _, _) in &targets[..5] {
        assert_converges(&aggregator, id, &sim).await;
    }
    let log = aggregator.log();
    assert!(
        log.contains("kind=\"too_many_pages\""),
        "the bound's kind is logged"
    );
    for (id, _, _) in &targets[..5] {
        assert!(
            log.lines().any(|l| l.contains("base state loaded")
                && l.contains(&format!("target_id={id}"))
                && !l.contains("pages=1 ")),
            "{id} loaded its base state from several pages:\n{log}"
        );
    }
    let (code, _) = aggregator
        .get("/v1/targets/capped/state")
        .await
        .expect("aggregator answers");
    assert_ne!(code, 200, "no partial base state for the capped target");
    let metrics = aggregator.metrics().await;
    assert_eq!(
        sluice_testkit::metric_value(&metrics, "sluice_aggregator_synced{target=\"capped\"}"),
        0.0,
        "{metrics}"
    );
    drop(worker);
    drop(aggregator);
}
