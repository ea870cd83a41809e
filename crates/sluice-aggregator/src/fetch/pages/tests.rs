//! The pages of one base state over real HTTP on loopback: against the simulator's paginated
//! snapshot in every mode (the state equals its truth), and against small servers that loop,
//! link elsewhere or break the limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use http::HeaderValue;
use serde_json::{Value, json};
use sluice_client::ClientOptions;
use sluice_merge::{MergeSpec, Merger, Strategy, VersionSpec};
use sluice_sim::{RunningSim, SimConfig};
use tokio::net::TcpListener;

use super::*;

const ENTITIES: usize = 250;
const PAGE: u64 = 40;

async fn sim() -> RunningSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = RunningSim::start(
        SimConfig {
            entities: ENTITIES,
            rate: 2_000.0,
            max_events: Some(3_000),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap();
    // The feed stops at max_events: every page is cut from the same state.
    sim.wait_for_head(3_000).await;
    sim
}

fn paging(mode: PageMode) -> Pagination {
    Pagination {
        mode,
        max_pages: Pagination::DEFAULT_MAX_PAGES,
        max_bytes: Pagination::DEFAULT_MAX_BYTES,
    }
}

fn spec() -> MergeSpec {
    MergeSpec {
        base_items: "/items".into(),
        base_key: "/key".into(),
        base_version: Some("/version".into()),
        key: "/key".into(),
        value: None,
        version: VersionSpec::Single("/version".into()),
        contiguous: true,
        strategy: Strategy::Replace,
        delete_events: Vec::new(),
        ignore_events: Vec::new(),
        reset_events: Vec::new(),
        max_buffered: 10,
        dedupe_window: 10,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    }
}

fn client(url: &Url, headers: HeaderMap) -> Client {
    Client::new(
        url.clone(),
        ClientOptions {
            headers,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

async fn fetch(url: &str, pagination: &Pagination) -> Result<Vec<Bytes>, PagesError> {
    let url = Url::parse(url).unwrap();
    fetch_pages(
        &client(&url, HeaderMap::new()),
        &PagedBase {
            target: "prices",
            url: &url,
            pagination,
            items: "/items",
            timeout: Duration::from_secs(10),
        },
    )
    .await
}

/// What the merger makes of `pages`: version and entities by key.
fn loaded(pages: &[Bytes]) -> (Option<u64>, BTreeMap<String, Value>) {
    let mut merger = Merger::new(Arc::new(spec()));
    let epoch = merger.fetch_request().unwrap().epoch;
    merger.load_base_pages(epoch, pages).unwrap();
    let entities = merger
        .entities()
        .map(|(key, value)| (key.to_owned(), value.to_value()))
        .collect();
    (merger.version(), entities)
}

fn truth(sim: &RunningSim) -> (Option<u64>, BTreeMap<String, Value>) {
    let snapshot = sim.snapshot();
    let items = snapshot
        .items
        .iter()
        .map(|i| (i.key.clone(), serde_json::to_value(i).unwrap()))
        .collect();
    (Some(snapshot.version), items)
}

fn size(param: &str) -> Option<PageSize> {
    Some(PageSize {
        param: param.to_owned(),
        size: PAGE,
    })
}

#[tokio::test]
async fn every_mode_fetches_the_whole_state_equal_to_the_simulators_truth() {
    let sim = sim().await;
    let truth = truth(&sim);
    let items = u64::try_from(truth.1.len()).unwrap();
    assert!(items > 2 * PAGE, "{items} entities make several pages");
    let full_pages = items.div_ceil(PAGE);
    let keyed = format!("&page_size={PAGE}");
    let modes = [
        (
            format!("{}{keyed}", sim.pages_url("body")),
            PageMode::NextLink {
                pointer: "/next".into(),
            },
            full_pages,
        ),
        (
            format!("{}{keyed}", sim.pages_url("header")),
            PageMode::LinkHeader,
            full_pages,
        ),
        (
            format!("{}{keyed}", sim.pages_url("cursor")),
            PageMode::Cursor {
                pointer: "/next_cursor".into(),
                param: "cursor".into(),
            },
            full_pages,
        ),
        // Positional modes end at the first empty page.
        (
            sim.pages_url("page"),
            PageMode::Page {
                param: "page".into(),
                first: 1,
                size: size("page_size"),
            },
            full_pages + 1,
        ),
        (
            sim.pages_url("offset"),
            PageMode::Offset {
                param: "offset".into(),
                size: size("limit"),
            },
            full_pages + 1,
        ),
    ];
    for (url, mode, expected_pages) in modes {
        let name = mode.as_str();
        let before = sim.page_requests();
        let pages = fetch(&url, &paging(mode))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            u64::try_from(pages.len()).unwrap(),
            expected_pages,
            "{name}"
        );
        assert_eq!(sim.page_requests() - before, expected_pages, "{name}");
        assert_eq!(loaded(&pages), truth, "{name}");
    }
}

#[tokio::test]
async fn more_pages_or_bytes_than_the_limits_is_an_error_naming_target_and_bound() {
    let sim = sim().await;
    let url = format!("{}&page_size={PAGE}", sim.pages_url("body"));
    let next = PageMode::NextLink {
        pointer: "/next".into(),
    };
    let few_pages = Pagination {
        max_pages: 3,
        ..paging(next.clone())
    };
    let error = fetch(&url, &few_pages).await.unwrap_err();
    assert_eq!(error.kind(), "too_many_pages");
    assert_eq!(
        error.to_string(),
        "target prices: the base state has more than 3 pages (aggregate.base.pagination.max_pages)"
    );
    assert_eq!(sim.page_requests(), 3, "the fourth page is never asked for");

    let few_bytes = Pagination {
        max_bytes: 10_000,
        ..paging(next)
    };
    let error = fetch(&url, &few_bytes).await.unwrap_err();
    assert_eq!(error.kind(), "too_many_bytes");
    assert_eq!(
        error.to_string(),
        "target prices: the base state's pages are larger than 10000 bytes together \
         (aggregate.base.pagination.max_bytes)"
    );
    // Exactly enough pages is fine.
    let pages = u64::try_from(sim.snapshot().items.len())
        .unwrap()
        .div_ceil(PAGE);
    let exact = Pagination {
        max_pages: usize::try_from(pages).unwrap(),
        ..few_pages
    };
    assert!(fetch(&url, &exact).await.is_ok());
}

/// Serves `router` on a loopback port; returns its origin (`http://127.0.0.1:PORT`).
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_link_or_cursor_back_to_a_page_already_fetched_is_a_loop() {
    // Page 1 links to page 2, page 2 back to page 1 (written differently: relative).
    let origin = serve(
        Router::new()
            .route(
                "/p1",
                get(|| async { axum::Json(json!({"items": [], "next": "/p2"})) }),
            )
            .route(
                "/p2",
                get(|| async { axum::Json(json!({"items": [], "next": "p1"})) }),
            )
            .route(
                "/c",
                get(|| async { axum::Json(json!({"items": [], "cursor": "same"})) }),
            ),
    )
    .await;
    let error = fetch(
        &format!("{origin}/p1"),
        &paging(PageMode::NextLink {
            pointer: "/next".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "page_loop");
    assert_eq!(
        error.to_string(),
        "target prices: page 3 of the base state is one already fetched (a pagination loop)"
    );
    // The cursor repeats: the second page names the cursor it was fetched with.
    let error = fetch(
        &format!("{origin}/c"),
        &paging(PageMode::Cursor {
            pointer: "/cursor".into(),
            param: "after".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "page_loop", "{error}");
}

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn recording(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    seen.lock().unwrap().push(headers);
    ([("content-type", "application/json")], body)
}

#[tokio::test]
async fn a_next_page_on_another_origin_gets_none_of_the_targets_headers() {
    let home_seen: Seen = Arc::default();
    let other_seen: Seen = Arc::default();
    let other = serve(
        Router::new()
            .route(
                "/p2",
                get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                    recording(
                        State(seen),
                        headers,
                        json!({"items": [{"key": "b", "version": 1}]}).to_string(),
                    )
                    .await
                }),
            )
            .with_state(other_seen.clone()),
    )
    .await;
    let next = format!("{other}/p2");
    let home = serve(
        Router::new()
            .route(
                "/p1",
                get(move |State(seen): State<Seen>, headers: HeaderMap| {
                    let body =
                        json!({"version": 3, "items": [{"key": "a", "version": 1}], "next": next})
                            .to_string();
                    recording(State(seen), headers, body)
                }),
            )
            .with_state(home_seen.clone()),
    )
    .await;
    let url = Url::parse(&format!("{home}/p1")).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
    headers.insert("x-api-key", HeaderValue::from_static("k-123"));
    let pagination = paging(PageMode::NextLink {
        pointer: "/next".into(),
    });
    let pages = fetch_pages(
        &client(&url, headers),
        &PagedBase {
            target: "prices",
            url: &url,
            pagination: &pagination,
            items: "/items",
            timeout: Duration::from_secs(10),
        },
    )
    .await
    .unwrap();
    assert_eq!(pages.len(), 2);
    let home_seen = home_seen.lock().unwrap();
    assert_eq!(home_seen[0]["authorization"], "Bearer s3cret");
    assert_eq!(home_seen[0]["x-api-key"], "k-123");
    let other_seen = other_seen.lock().unwrap();
    assert_eq!(other_seen.len(), 1);
    assert!(
        !other_seen[0].contains_key("authorization") && !other_seen[0].contains_key("x-api-key"),
        "{:?}",
        other_seen[0]
    );
    assert_eq!(other_seen[0]["accept"], "application/json");
}

#[tokio::test]
async fn a_next_link_that_is_not_a_string_or_cannot_be_followed_is_an_error() {
    let origin = serve(
        Router::new()
            .route(
                "/n",
                get(|| async { axum::Json(json!({"items": [], "next": 7})) }),
            )
            .route(
                "/f",
                get(|| async {
                    axum::Json(json!({"items": [], "next": "ftp://x/y?token=s3cret"}))
                }),
            )
            .route(
                "/e",
                get(|| async { axum::Json(json!({"items": [], "next": ""})) }),
            ),
    )
    .await;
    let next = paging(PageMode::NextLink {
        pointer: "/next".into(),
    });
    let error = fetch(&format!("{origin}/n"), &next).await.unwrap_err();
    assert_eq!(error.kind(), "page_next");
    assert_eq!(
        error.to_string(),
        "target prices: page 1 of the base state has a next-page link that is not a string"
    );
    let error = fetch(&format!("{origin}/f"), &next).await.unwrap_err();
    assert_eq!(error.kind(), "page_link");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    // An empty link ends the pages.
    assert_eq!(fetch(&format!("{origin}/e"), &next).await.unwrap().len(), 1);
}
