//! `sluice tail URL`: print the events of one SSE endpoint as JSON lines.
//!
//! Output (stdout), one JSON object per line:
//! `{"id":…,"event":…,"data":…}` for each dispatched event (`id` is the last event id in force,
//! `null` when empty); with `--comments` also `{"comment":…}` and `{"retry":…}` (milliseconds).
//! Connection life (opened, reconnecting and why) goes to stderr, as does the reason it stopped.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sluice_client::{
    Client, ClientOptions, ConnectError, EventSource, EventSourceError, EventSourceOptions,
    ReconnectOptions, RequestBody, SourceItem,
};
use sluice_sse::{Item, Limits};
use tokio_util::sync::CancellationToken;

/// Exit statuses of `sluice tail`, one per way it can stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TailExit {
    /// `--max-events` reached, or the stream ended with `--no-reconnect`.
    Done = 0,
    /// Bad arguments or options (clap uses 2 for usage errors as well).
    Usage = 2,
    /// The server answered an HTTP status that is not a stream (and retrying cannot help or is off).
    HttpStatus = 3,
    /// A 200 response that is not `text/event-stream`.
    ContentType = 4,
    /// No byte for `--idle-timeout` (with `--no-reconnect`; otherwise it reconnects).
    IdleTimeout = 5,
    /// An event or line exceeded the parser limits.
    ParseLimit = 6,
    /// The connection failed or broke (with `--no-reconnect`, or too many redirects).
    Connection = 7,
    /// The server answered 204: do not reconnect.
    NoContent = 8,
    /// Could not write to stdout (for example a closed pipe).
    Output = 9,
    /// Interrupted by SIGINT or SIGTERM.
    Interrupted = 130,
}

impl TailExit {
    fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// Arguments of `sluice tail`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 done (--max-events reached, or end of stream with --no-reconnect), 2 usage,
3 http status, 4 wrong content type, 5 idle timeout (--no-reconnect), 6 parse limit exceeded, 7 connection
failed, 8 server answered 204 (do not reconnect), 9 cannot write output, 130 interrupted.")]
pub struct TailArgs {
    /// The SSE endpoint (http or https). Without one, tails an embedded simulator (`sluice sim`).
    url: Option<url::Url>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Proxy URL: http://, https://, socks5:// or socks5h://, credentials as user:pass@.
    #[arg(long, env = "SLUICE_TAIL_PROXY", hide_env_values = true)]
    proxy: Option<url::Url>,
    /// Also trust the certificates in this PEM file (a private CA of the upstream or proxy).
    #[arg(long, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// Present this PEM client certificate chain (mTLS), with `--key`.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--cert`.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Send this `Last-Event-ID` with the first request (resume after it).
    #[arg(long)]
    last_event_id: Option<String>,
    /// Also print comments (heartbeats) and accepted `retry` values.
    #[arg(long)]
    comments: bool,
    /// End at the end of the first response instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
    /// Stop after printing this many events.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
    /// Take the connection for dead when no byte (comments included) arrives for this long, e.g.
    /// `30s`: reconnect, or stop with `--no-reconnect`.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,
    /// Reconnection time until the server sends `retry:`: the least wait before a reconnect (a
    /// failed attempt waits at least 1s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s", value_name = "DURATION")]
    retry: Duration,
    /// Upper bound of the backoff (jittered, doubling from 500ms while reconnects continue).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", value_name = "DURATION")]
    max_retry: Duration,
    /// A stream open this long starts the backoff over; `0s` restarts it at every opened stream.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", value_name = "DURATION")]
    reset_after: Duration,
    /// Redirects followed before giving up.
    #[arg(long, default_value_t = 5, value_name = "N")]
    max_redirects: usize,
    /// Time allowed to establish a connection (TCP, TLS, proxy handshake).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", value_name = "DURATION")]
    connect_timeout: Duration,
    /// Longest accepted line, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_line_bytes: Option<usize>,
    /// Largest accepted event (all its data lines), in bytes.
    #[arg(long, value_name = "BYTES")]
    max_event_bytes: Option<usize>,
    /// Do not ask for a compressed body (no `Accept-Encoding: gzip, br, zstd`): for a server
    /// that compresses in large blocks and so holds its heartbeats back.
    #[arg(long)]
    no_compression: bool,
    /// Request method, e.g. `POST` or `REPORT` (default `GET`, or `POST` with `--data`).
    #[arg(short = 'X', long, value_name = "METHOD")]
    method: Option<String>,
    /// Request body, sent on every (re)connect with `Last-Event-ID`; its type is the
    /// `-H 'Content-Type: …'` given, else `application/x-www-form-urlencoded` (as curl's).
    #[arg(short = 'd', long, value_name = "TEXT")]
    data: Option<String>,
}

/// Runs `sluice tail` until it is done, fails, or `shutdown` fires.
pub async fn run(mut args: TailArgs, shutdown: CancellationToken) -> ExitCode {
    // Without a URL, tail an embedded simulator: a one-command look at Sluice on a fresh machine.
    let _embedded = if args.url.is_none() {
        match embedded_simulator().await {
            Ok((sim, url)) => {
                tracing::info!(url = %url, "no url given: tailing the embedded simulator");
                args.url = Some(url);
                Some(sim)
            }
            Err(error) => {
                eprintln!("sluice tail: {error:#}");
                return TailExit::Usage.code();
            }
        }
    } else {
        None
    };
    let source = match build(&args) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("sluice tail: {error:#}");
            return TailExit::Usage.code();
        }
    };
    let exit = tokio::select! {
        exit = pump(source, &args) => exit,
        () = shutdown.cancelled() => {
            eprintln!("sluice tail: stopped: interrupted");
            TailExit::Interrupted
        }
    };
    exit.code()
}

async fn embedded_simulator() -> anyhow::Result<(sluice_sim::RunningSim, url::Url)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the embedded simulator on 127.0.0.1")?;
    let config = sluice_sim::SimConfig {
        rate: 5.0,
        heartbeat: Duration::from_secs(2),
        ..sluice_sim::SimConfig::default()
    };
    let sim = sluice_sim::RunningSim::start(config, listener)
        .await
        .context("cannot start the embedded simulator")?;
    let url = url::Url::parse(&sim.stream_url()).context("simulator stream url")?;
    Ok((sim, url))
}

fn build(args: &TailArgs) -> anyhow::Result<EventSource> {
    let url = args.url.clone().context("no url to tail")?;
    let mut options = ClientOptions {
        proxy: args.proxy.clone(),
        connect_timeout: args.connect_timeout,
        max_redirects: args.max_redirects,
        compression: !args.no_compression,
        ..ClientOptions::default()
    };
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --cacert {}", path.display()))?;
        options.root_certificates_pem.push(pem);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let mut pem = std::fs::read(cert)
            .with_context(|| format!("cannot read --cert {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key).with_context(|| format!("cannot read --key {}", key.display()))?,
        );
        options.identity_pem = Some(pem);
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("header {:?} is not `Name: value`", header_name(header)))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("invalid header name {:?}", name.trim()))?;
        let value = http::HeaderValue::from_str(value.trim())
            .with_context(|| format!("invalid value for header {name}"))?;
        options.headers.append(name, value);
    }
    let method = match (&args.method, &args.data) {
        (Some(method), _) => http::Method::from_bytes(method.as_bytes())
            .with_context(|| format!("invalid method {method:?}"))?,
        (None, Some(_)) => http::Method::POST,
        (None, None) => http::Method::GET,
    };
    let body = args.data.as_ref().map(|data| RequestBody {
        bytes: data.clone().into(),
        content_type: options
            .headers
            .remove(http::header::CONTENT_TYPE)
            .unwrap_or(http::HeaderValue::from_static(
                "application/x-www-form-urlencoded",
            )),
        secret: false,
    });
    let client = Client::new(url, options)?.with_request(method, body);
    let mut limits = Limits::default();
    if let Some(max) = args.max_line_bytes {
        limits.max_line_bytes = max;
    }
    if let Some(max) = args.max_event_bytes {
        limits.max_event_bytes = max;
    }
    let policy = ReconnectOptions::interactive(args.retry, args.max_retry, args.reset_after)
        .context("invalid --max-retry")?;
    Ok(EventSource::new(
        client,
        EventSourceOptions {
            reconnect: !args.no_reconnect,
            idle_timeout: args.idle_timeout,
            policy,
            last_event_id: args.last_event_id.clone().unwrap_or_default(),
            limits,
        },
    ))
}

/// The header's name only, so a malformed `-H` never echoes a secret value.
fn header_name(header: &str) -> &str {
    header.split([':', ' ']).next().unwrap_or("")
}

async fn pump(mut source: EventSource, args: &TailArgs) -> TailExit {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut events: u64 = 0;
    if args.max_events == Some(0) {
        return TailExit::Done;
    }
    loop {
        let item = match source.next().await {
            Ok(Some(item)) => item,
            Ok(None) => {
                eprintln!("sluice tail: stopped: end of stream");
                return TailExit::Done;
            }
            Err(error) => {
                eprintln!("sluice tail: stopped: {error}");
                return exit_for(&error);
            }
        };
        let line = match item {
            SourceItem::Opened { last_event_id } => {
                tracing::info!(last_event_id = %last_event_id, "stream opened");
                continue;
            }
            SourceItem::Reconnecting {
                reason,
                detail,
                retry_in,
            } => {
                tracing::warn!(
                    reason = reason.as_str(),
                    retry_in = %humantime::format_duration(retry_in),
                    last_event_id = %source.last_event_id(),
                    "reconnecting: {detail}"
                );
                continue;
            }
            SourceItem::Item(Item::Event(event)) => {
                events += 1;
                let id = (!event.id.is_empty()).then(|| event.id.as_str());
                serde_json::json!({"id": id, "event": event.event.as_str(), "data": event.data.as_str()})
            }
            SourceItem::Item(Item::Comment(text)) if args.comments => {
                serde_json::json!({"comment": text.as_str()})
            }
            SourceItem::Item(Item::Retry(ms)) if args.comments => serde_json::json!({"retry": ms}),
            SourceItem::Item(_) => continue,
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return TailExit::Output;
        }
        if args.max_events.is_some_and(|max| events >= max) {
            return TailExit::Done;
        }
    }
}

fn exit_for(error: &EventSourceError) -> TailExit {
    match error {
        EventSourceError::Connect(ConnectError::NoContent) => TailExit::NoContent,
        EventSourceError::Connect(ConnectError::Status { .. }) => TailExit::HttpStatus,
        EventSourceError::Connect(ConnectError::ContentType { .. }) => TailExit::ContentType,
        EventSourceError::Connect(ConnectError::Options(_)) => TailExit::Usage,
        EventSourceError::Connect(_) | EventSourceError::Stream(_) => TailExit::Connection,
        EventSourceError::Parse(_) => TailExit::ParseLimit,
        EventSourceError::IdleTimeout(_) => TailExit::IdleTimeout,
    }
}
