//! An HTTPS front for `localhost` that offers HTTP/2 by ALPN (or only HTTP/1.1), serves with
//! hyper's server, and forwards every request to a simulator over plain HTTP/1.1, streaming the
//! response body back as it arrives. It counts what it saw (TCP connections, the protocol each TLS
//! handshake settled on, requests per HTTP version, streams open at once on one connection), so a
//! test can assert how a client used it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_sim::RunningSim;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The application protocols the front offers in its TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// ALPN `h2` and `http/1.1`, in that order of preference.
    Http2,
    /// ALPN `http/1.1` only: an HTTP/1.1-only TLS server.
    Http11Only,
    /// As [`Offer::Http2`], allowing at most this many concurrent streams per connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    Http2Streams(u32),
}

/// What the front has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontStats {
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TLS handshakes that settled on `h2`.
    pub alpn_h2: u64,
    /// TLS handshakes that settled on `http/1.1`, or on no ALPN protocol.
    pub alpn_http11: u64,
    /// Connections that carried at least one request.
    pub connections_with_requests: u64,
    /// Requests received over HTTP/2.
    pub http2_requests: u64,
    /// Requests received over HTTP/1.1.
    pub http11_requests: u64,
    /// Requests received over any other version.
    pub other_requests: u64,
    /// The most responses one connection had open (head sent, body not finished) at once.
    pub max_open_streams_on_one_connection: u64,
}

#[derive(Default)]
struct Counters {
    tcp_accepted: AtomicU64,
    alpn_h2: AtomicU64,
    alpn_http11: AtomicU64,
    connections_with_requests: AtomicU64,
    http2_requests: AtomicU64,
    http11_requests: AtomicU64,
    other_requests: AtomicU64,
    max_open_streams: AtomicU64,
}

/// One TLS connection's bookkeeping: requests it carried and responses it has open.
struct ConnectionCount {
    counters: Arc<Counters>,
    requests: AtomicU64,
    open: AtomicU64,
}

/// Held by a forwarded response body; closes the stream's slot in [`ConnectionCount::open`]
/// when the body is finished or dropped (the client reset the stream, or the connection ended).
struct OpenStream(Arc<ConnectionCount>);

impl OpenStream {
    fn new(connection: Arc<ConnectionCount>) -> OpenStream {
        let open = connection.open.fetch_add(1, Ordering::SeqCst) + 1;
        connection
            .counters
            .max_open_streams
            .fetch_max(open, Ordering::SeqCst);
        OpenStream(connection)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running front. Dropping it stops accepting and closes the connections it holds.
pub struct H2Front {
    url: String,
    ca: PathBuf,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
    /// Every connection's task, so they end with the front.
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for H2Front {
    fn drop(&mut self) {
        self.accept.abort();
        let mut tasks = match self.connections.lock() {
            Ok(tasks) => tasks,
            Err(poisoned) => poisoned.into_inner(),
        };
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

impl H2Front {
    /// Starts a front for `sim` on a loopback port, offering `offer`, with a fresh self-signed
    /// certificate for `localhost` written to `dir/h2-ca.pem` (the file a client must trust).
    pub async fn start(sim: &RunningSim, dir: &Path, offer: Offer) -> H2Front {
        let (acceptor, ca) = acceptor(dir, offer);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the h2 front");
        let port = listener.local_addr().expect("front address").port();
        let counters = Arc::new(Counters::default());
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = sim.addr();
        let accept = tokio::spawn({
            let counters = counters.clone();
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        return;
                    };
                    counters.tcp_accepted.fetch_add(1, Ordering::SeqCst);
                    let task = tokio::spawn(serve(
                        socket,
                        acceptor.clone(),
                        upstream,
                        counters.clone(),
                        offer,
                    ));
                    if let Ok(mut tasks) = connections.lock() {
                        tasks.retain(|t| !t.is_finished());
                        tasks.push(task);
                    }
                }
            }
        });
        H2Front {
            url: format!("https://localhost:{port}"),
            ca,
            counters,
            accept,
            connections,
        }
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PEM file of the certificate to trust.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The counts so far.
    pub fn stats(&self) -> FrontStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
        FrontStats {
            tcp_accepted: load(&c.tcp_accepted),
            alpn_h2: load(&c.alpn_h2),
            alpn_http11: load(&c.alpn_http11),
            connections_with_requests: load(&c.connections_with_requests),
            http2_requests: load(&c.http2_requests),
            http11_requests: load(&c.http11_requests),
            other_requests: load(&c.other_requests),
            max_open_streams_on_one_connection: load(&c.max_open_streams),
        }
    }
}

/// A TLS acceptor for `localhost` offering `offer`, and the PEM path of its certificate.
fn acceptor(dir: &Path, offer: Offer) -> (TlsAcceptor, PathBuf) {
    let alpn = match offer {
        Offer::Http2 | Offer::Http2Streams(_) => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Offer::Http11Only => vec![b"http/1.1".to_vec()],
    };
    super::localhost_tls(dir, "h2-ca.pem", alpn)
}

/// One accepted connection: TLS, then HTTP/2 or HTTP/1.1 as ALPN decided.
async fn serve(
    socket: TcpStream,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    counters: Arc<Counters>,
    offer: Offer,
) {
    let Ok(tls) = acceptor.accept(socket).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    if h2 {
        counters.alpn_h2.fetch_add(1, Ordering::SeqCst);
    } else {
        counters.alpn_http11.fetch_add(1, Ordering::SeqCst);
    }
    let connection = Arc::new(ConnectionCount {
        counters,
        requests: AtomicU64::new(0),
        open: AtomicU64::new(0),
    });
    let service =
        hyper::service::service_fn(move |request| forward(request, upstream, connection.clone()));
    let io = TokioIo::new(tls);
    // Errors here are the client going away; the counts already hold what matters.
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        if let Offer::Http2Streams(streams) = offer {
            builder.max_concurrent_streams(streams);
        }
        let _ = builder.serve_connection(io, service).await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// Counts `request`, sends it to `upstream` over a fresh HTTP/1.1 connection and answers with the
/// upstream's response, its body streamed through frame by frame.
async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
    connection: Arc<ConnectionCount>,
) -> Result<Response<Body>, Infallible> {
    let counters = &connection.counters;
    match request.version() {
        Version::HTTP_2 => counters.http2_requests.fetch_add(1, Ordering::SeqCst),
        Version::HTTP_11 => counters.http11_requests.fetch_add(1, Ordering::SeqCst),
        _ => counters.other_requests.fetch_add(1, Ordering::SeqCst),
    };
    if connection.requests.fetch_add(1, Ordering::SeqCst) == 0 {
        counters
            .connections_with_requests
            .fetch_add(1, Ordering::SeqCst);
    }
    let Some(response) = send_upstream(&request, upstream).await else {
        return Ok(bad_gateway());
    };
    let (mut head, body) = response.into_parts();
    // Connection-specific fields do not exist in HTTP/2.
    head.headers.remove(CONNECTION);
    head.headers.remove(TRANSFER_ENCODING);
    head.headers.remove("keep-alive");
    let open = OpenStream::new(connection.clone());
    let body = body
        .map_frame(move |frame| {
            let _held_until_the_body_ends = &open;
            frame
        })
        .boxed();
    Ok(Response::from_parts(head, body))
}

/// The request, re-sent as HTTP/1.1 to `upstream`; `None` when the upstream is unreachable.
async fn send_upstream(
    request: &Request<Incoming>,
    upstream: SocketAddr,
) -> Option<Response<Incoming>> {
    let tcp = TcpStream::connect(upstream).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(connection);
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut builder = Request::builder()
        .method(request.method())
        .uri(path)
        .version(Version::HTTP_11);
    for (name, value) in request.headers() {
        if name != HOST && name != CONNECTION && name != TRANSFER_ENCODING {
            builder = builder.header(name, value);
        }
    }
    let forwarded = builder
        .header(HOST, upstream.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    sender.send_request(forwarded).await.ok()
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
