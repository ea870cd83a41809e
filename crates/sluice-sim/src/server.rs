//! The HTTP side: routes, handlers, and an accept loop that keeps each socket's handle so a
//! fault can end the connection with a real RST or a FIN in the middle of a response.

use std::convert::Infallible;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::faults::{FaultQueue, QueuedFaults, RawParams, Scalar};
use crate::feed::Feed;
use crate::model::Snapshot;
use crate::pages::{self, PageQuery};
use crate::stream::{CHUNKS_IN_FLIGHT, ConnControl, StreamTask};
use crate::{SimConfig, SimError};

/// How long a connection may take to finish after shutdown before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (for example out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Clone)]
struct AppState {
    config: Arc<SimConfig>,
    feed: Arc<Feed>,
    faults: Arc<Mutex<FaultQueue>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The parts of a simulator shared by the server and the [`RunningSim`] handle.
struct Sim {
    config: Arc<SimConfig>,
    feed: Arc<Feed>,
    faults: Arc<Mutex<FaultQueue>>,
}

impl Sim {
    fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        Ok(Sim {
            feed: Arc::new(Feed::new(&config)),
            config: Arc::new(config),
            faults: Arc::default(),
        })
    }

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> Result<(), SimError> {
        let tasks = TaskTracker::new();
        let feed = self.feed.clone();
        let rate = self.config.rate;
        let token = shutdown.clone();
        tasks.spawn(async move { feed.run(rate, token).await });
        let router = router(AppState {
            config: self.config.clone(),
            feed: self.feed.clone(),
            faults: self.faults.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    tasks.spawn(serve_connection(tcp, router.clone(), shutdown.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        drop(listener);
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

/// Serves the simulator on `listener` until `shutdown` is cancelled.
pub async fn serve(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    Sim::new(config)?.run(listener, shutdown).await
}

/// A simulator running in the background (started in-process, e.g. by a test).
///
/// Dropping it stops the server too; [`RunningSim::shutdown`] also waits for it.
pub struct RunningSim {
    addr: SocketAddr,
    config: Arc<SimConfig>,
    feed: Arc<Feed>,
    faults: Arc<Mutex<FaultQueue>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SimError>>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("addr", &self.addr)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// Validates `config` and starts serving on `listener` in a spawned task.
    pub async fn start(config: SimConfig, listener: TcpListener) -> Result<RunningSim, SimError> {
        let addr = listener.local_addr()?;
        let sim = Sim::new(config)?;
        let shutdown = CancellationToken::new();
        let (config, feed, faults) = (sim.config.clone(), sim.feed.clone(), sim.faults.clone());
        let task = tokio::spawn(sim.run(listener, shutdown.clone()));
        Ok(RunningSim {
            addr,
            config,
            feed,
            faults,
            shutdown,
            task,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// `http://IP:PORT` (loopback when listening on an unspecified address).
    pub fn base_url(&self) -> String {
        base_url(self.addr)
    }

    /// The SSE endpoint, `base_url()` + `/v1/stream`.
    pub fn stream_url(&self) -> String {
        format!("{}/v1/stream", self.base_url())
    }

    /// The REST base state, `base_url()` + `/v1/snapshot`.
    pub fn snapshot_url(&self) -> String {
        format!("{}/v1/snapshot", self.base_url())
    }

    /// The paginated REST base state in `style` (`body`, `header`, `cursor`, `page` or
    /// `offset`), the first page: `base_url()` + `/v1/snapshot/pages?style=…` (add the page size
    /// parameter: `page_size`, or `limit` for `offset`).
    pub fn pages_url(&self, style: &str) -> String {
        format!("{}/v1/snapshot/pages?style={style}", self.base_url())
    }

    /// How many `GET /v1/snapshot/pages` requests were served.
    pub fn page_requests(&self) -> u64 {
        self.feed.page_requests()
    }

    /// The sequence number of the last delta produced (0: none yet).
    pub fn head(&self) -> u64 {
        self.feed.head()
    }

    /// The true current state (what `GET /v1/snapshot` answers).
    pub fn snapshot(&self) -> Snapshot {
        self.feed.snapshot()
    }

    /// How many `GET /v1/snapshot` requests were served (what a consumer's base-state fetches
    /// cost the upstream).
    pub fn snapshot_requests(&self) -> u64 {
        self.feed.snapshot_requests()
    }

    /// Resolves once the feed has produced delta `seq`. Never resolves when `seq` is beyond
    /// `max_events` or the feed is a firehose (whose head does not move).
    pub async fn wait_for_head(&self, seq: u64) {
        let mut head = self.feed.subscribe();
        // The sender lives in `self.feed`, so the channel cannot close while we wait.
        let _ = head.wait_for(|h| *h >= seq).await;
    }

    /// Queues one-shot faults for the next stream connections, as `POST /admin/faults` does.
    pub fn queue_faults(&self, faults: QueuedFaults) -> Result<(), Vec<String>> {
        faults.faults.validate()?;
        lock(&self.faults).push(faults);
        Ok(())
    }

    /// Drops every queued one-shot fault, as `DELETE /admin/faults` does.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Stops serving (open streams end) and waits for every connection task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, kind = error.kind(), "simulator failed"),
            Err(error) => tracing::warn!(%error, "simulator task failed"),
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn base_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

fn lock(faults: &Mutex<FaultQueue>) -> std::sync::MutexGuard<'_, FaultQueue> {
    faults.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves HTTP/1.1 on one accepted socket, keeping a second descriptor of it so that a fault
/// can set SO_LINGER 0 (close sends an RST) or shut it down (a FIN mid-response).
async fn serve_connection(tcp: TcpStream, router: Router, shutdown: CancellationToken) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let (tcp, handle) = match split_handle(tcp) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "cannot duplicate accepted socket");
            return;
        }
    };
    let ctl = ConnControl::default();
    let service = {
        let ctl = ctl.clone();
        hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ctl.clone());
            router.clone().oneshot(request.map(Body::new))
        })
    };
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // Biased: let the connection flush what it has before a fault or shutdown acts.
        biased;
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        _ = ctl.reset.cancelled() => {
            if let Err(error) = socket2::SockRef::from(&handle).set_linger(Some(Duration::ZERO)) {
                tracing::warn!(%error, "cannot set SO_LINGER for reset fault");
            }
            // Returning drops both descriptors; the last close sends the RST.
        }
        _ = ctl.cut.cancelled() => {
            if let Err(error) = handle.shutdown(Shutdown::Both) {
                tracing::debug!(%error, "cannot shut down socket for max_age fault");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await.is_err() {
                tracing::debug!("connection did not finish within the shutdown grace");
            }
        }
    }
}

fn split_handle(tcp: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = tcp.into_std()?;
    let handle = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, handle))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/snapshot/pages", get(snapshot_page))
        .route("/v1/stream", get(stream))
        .route(
            "/admin/faults",
            get(list_faults).post(queue_faults).delete(clear_faults),
        )
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn snapshot(State(app): State<AppState>) -> Json<Snapshot> {
    Json(app.feed.serve_snapshot())
}

async fn snapshot_page(State(app): State<AppState>, uri: Uri) -> Response {
    let query: PageQuery = match serde_urlencoded::from_str(uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(error) => return bad_request(&[format!("query: {error}")]),
    };
    match pages::page(&app.feed.serve_page(), &query) {
        Ok(answer) => {
            let mut response = Json(answer.body).into_response();
            if let Some(link) = answer.link.and_then(|l| HeaderValue::from_str(&l).ok()) {
                response.headers_mut().insert(header::LINK, link);
            }
            response
        }
        Err(problem) => bad_request(&[problem]),
    }
}

fn bad_request(problems: &[String]) -> Response {
    let mut body = problems.join("\n");
    body.push('\n');
    (StatusCode::BAD_REQUEST, body).into_response()
}

async fn stream(
    State(app): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    ctl: Option<Extension<ConnControl>>,
) -> Response {
    let query = match RawParams::from_query(uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(problem) => return bad_request(&[problem]),
    };
    let queued = lock(&app.faults).take();
    let raw = match queued {
        Some(queued) => query.or(queued),
        None => query,
    };
    let mut options = match raw.validate() {
        Ok(options) => options,
        Err(problems) => return bad_request(&problems),
    };

    if options.redirect > 0 {
        let hops = options.redirect - 1;
        let next = RawParams {
            redirect: (hops > 0).then(|| Scalar::Num(u64::from(hops))),
            ..raw
        }
        .to_query();
        let location = if next.is_empty() {
            uri.path().to_owned()
        } else {
            format!("{}?{next}", uri.path())
        };
        tracing::debug!(hops, "stream redirect fault");
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }

    if let Some(status) = options.status {
        tracing::debug!(status = status.as_u16(), "stream status fault");
        let mut response = if status == StatusCode::NO_CONTENT {
            status.into_response()
        } else {
            (status, format!("simulated {status}\n")).into_response()
        };
        if let Some(seconds) = options.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }

    let last_event_id = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| options.last_event_id.clone());
    let firehose = options.firehose || app.config.is_firehose();
    options.firehose = firehose;
    let start = app.feed.start(last_event_id.as_deref(), firehose);
    tracing::debug!(
        next = start.next,
        reset = start.reset.map(|(r, _)| r.as_str()),
        firehose,
        "stream opened"
    );

    let content_type = options
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    let closes = options.close_after.is_some() || options.close_after_events.is_some();

    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    app.tasks.spawn(
        StreamTask {
            feed: app.feed.clone(),
            options,
            start,
            heartbeat: app.config.heartbeat,
            retry: app.config.retry,
            ctl: ctl.map(|Extension(ctl)| ctl),
            tx,
            shutdown: app.shutdown.clone(),
        }
        .run(),
    );
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    }));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if closes {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[derive(serde::Serialize)]
struct Pending {
    pending: Vec<QueuedFaults>,
}

async fn list_faults(State(app): State<AppState>) -> Json<Pending> {
    Json(Pending {
        pending: lock(&app.faults).pending(),
    })
}

async fn queue_faults(State(app): State<AppState>, body: Bytes) -> Response {
    let queued: QueuedFaults = match serde_json::from_slice(&body) {
        Ok(queued) => queued,
        Err(error) => return bad_request(&[format!("body: {error}")]),
    };
    if let Err(problems) = queued.faults.validate() {
        return bad_request(&problems);
    }
    let mut faults = lock(&app.faults);
    faults.push(queued);
    Json(Pending {
        pending: faults.pending(),
    })
    .into_response()
}

async fn clear_faults(State(app): State<AppState>) -> StatusCode {
    lock(&app.faults).clear();
    StatusCode::NO_CONTENT
}
