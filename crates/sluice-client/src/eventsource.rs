//! The reconnect loop of a browser's `EventSource`, over [`Client`], the parser and the shared
//! [`ReconnectPolicy`].
//!
//! What it must NOT do: decide on its own when or whether to reconnect (the policy does, for the
//! worker as well), or log (it yields what happened; the caller reports it).

use std::time::Duration;

use sluice_sse::{Item, Limits, ParseError, Parser};
use tokio::time::Instant;

use crate::connect::{Client, ConnectError, Connection, StreamError};
use crate::reason::DisconnectReason;
use crate::reconnect::{Decision, Outcome, ReconnectOptions, ReconnectPolicy};

/// How an [`EventSource`] behaves between connections.
#[derive(Debug, Clone)]
pub struct EventSourceOptions {
    /// Reconnect after the stream ends or breaks (an `EventSource` does); `false` ends after the first response.
    pub reconnect: bool,
    /// With no byte at all (comments included) for this long, the connection is taken for dead:
    /// reconnect (as a browser's read timeout does), or with `reconnect` off stop with
    /// [`EventSourceError::IdleTimeout`].
    pub idle_timeout: Option<Duration>,
    /// When to reconnect and after how long: the shared [`ReconnectPolicy`] rules (backoff with
    /// full jitter, the reconnection time until the server sends `retry:`, the failed-attempt
    /// floor, whether a hard failure stops).
    pub policy: ReconnectOptions,
    /// `Last-Event-ID` for the first request (a resumed position), empty for none.
    pub last_event_id: String,
    /// Parser limits (line and event size).
    pub limits: Limits,
}

impl Default for EventSourceOptions {
    /// Reconnecting as a browser does, with [`ReconnectOptions::default`].
    fn default() -> Self {
        EventSourceOptions {
            reconnect: true,
            idle_timeout: None,
            policy: ReconnectOptions::default(),
            last_event_id: String::new(),
            limits: Limits::default(),
        }
    }
}

/// What an [`EventSource`] yields: parsed items and the connection's life events.
#[derive(Debug)]
pub enum SourceItem {
    /// A response with status 200 and `text/event-stream` was opened.
    Opened {
        /// `Last-Event-ID` sent with the request (empty when none).
        last_event_id: String,
    },
    /// An event, comment or accepted `retry:` value.
    Item(Item),
    /// The connection ended or could not be made, and another attempt follows after `retry_in`.
    Reconnecting {
        /// Why the connection ended.
        reason: DisconnectReason,
        /// A one-line description (secrets removed).
        detail: String,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
}

/// Why an [`EventSource`] stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum EventSourceError {
    /// The connection failed in a way retrying cannot help (or reconnecting is off).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The stream broke and reconnecting is off.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream exceeded a parser limit.
    #[error("stream rejected: {0}")]
    Parse(#[from] ParseError),
    /// No byte arrived within the idle timeout.
    #[error("no bytes received for {}s (idle timeout)", .0.as_secs_f64())]
    IdleTimeout(Duration),
}

impl EventSourceError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EventSourceError::Connect(e) => e.kind(),
            EventSourceError::Stream(e) => e.kind(),
            EventSourceError::Parse(e) => e.kind(),
            EventSourceError::IdleTimeout(_) => "idle_timeout",
        }
    }
}

enum State {
    Connect { delay: Duration },
    Streaming(Connection),
    Done,
}

/// A reconnecting reader of one SSE endpoint, as the HTML `EventSource` behaves.
///
/// Sends `Last-Event-ID` (the last id seen, which persists across events and reconnects) on every
/// reconnect, and leaves when and whether to reconnect to its [`ReconnectPolicy`]: `retry:` and
/// `Retry-After` honoured, stop on 204, overload and outage statuses retried with jittered
/// exponential backoff, other statuses and wrong content types stopping it (with
/// [`HardFailure::Stop`](crate::HardFailure::Stop)). An event over the parser limits always stops
/// it: the parser stays failed.
pub struct EventSource {
    client: Client,
    reconnect: bool,
    idle_timeout: Option<Duration>,
    parser: Parser,
    state: State,
    policy: ReconnectPolicy,
}

impl EventSource {
    /// Creates the source; nothing is sent until the first [`EventSource::next`].
    pub fn new(client: Client, options: EventSourceOptions) -> EventSource {
        let parser = Parser::new(options.limits).with_last_event_id(&options.last_event_id);
        EventSource {
            client,
            reconnect: options.reconnect,
            idle_timeout: options.idle_timeout,
            parser,
            state: State::Connect {
                delay: Duration::ZERO,
            },
            policy: ReconnectPolicy::new(options.policy),
        }
    }

    /// The last event id in force (what the next reconnect would send).
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The reconnection time currently in force (changed by `retry:`).
    pub fn reconnection_time(&self) -> Duration {
        self.policy.reconnection_time()
    }

    /// The next item; `Ok(None)` once the stream ended and reconnecting is off.
    pub async fn next(&mut self) -> Result<Option<SourceItem>, EventSourceError> {
        loop {
            if let Some(item) = self.parser.next_item()? {
                match &item {
                    Item::Retry(ms) => self.policy.retry_field(*ms),
                    Item::Event(_) => self.policy.dispatched(),
                    Item::Comment(_) => {}
                }
                return Ok(Some(SourceItem::Item(item)));
            }
            match &mut self.state {
                State::Done => return Ok(None),
                State::Connect { delay } => {
                    if !delay.is_zero() {
                        tokio::time::sleep(*delay).await;
                    }
                    let last_event_id = self.parser.last_event_id().to_owned();
                    match self.client.connect(&last_event_id).await {
                        Ok(connection) => {
                            self.policy.opened(Instant::now());
                            self.state = State::Streaming(connection);
                            return Ok(Some(SourceItem::Opened { last_event_id }));
                        }
                        Err(error) => {
                            let decision = self.decide(Outcome::Failed(&error));
                            let (reason, detail) = (error.disconnect_reason(), error.to_string());
                            return self.follow(decision, reason, detail, Err(error.into()));
                        }
                    }
                }
                State::Streaming(connection) => {
                    let chunk = match self.idle_timeout {
                        Some(limit) => {
                            match tokio::time::timeout(limit, connection.next_chunk()).await {
                                Ok(chunk) => chunk,
                                Err(_) => {
                                    self.parser.end_of_stream();
                                    let error = EventSourceError::IdleTimeout(limit);
                                    let detail = error.to_string();
                                    let decision = self.decide(Outcome::Ended);
                                    let reason = DisconnectReason::SilentDrop;
                                    return self.follow(decision, reason, detail, Err(error));
                                }
                            }
                        }
                        None => connection.next_chunk().await,
                    };
                    match chunk {
                        Ok(Some(bytes)) => self.parser.push(&bytes),
                        Ok(None) => {
                            self.parser.end_of_stream();
                            let detail = "server closed the stream".to_owned();
                            let decision = self.decide(Outcome::Ended);
                            return self.follow(decision, DisconnectReason::Eof, detail, Ok(None));
                        }
                        Err(error) => {
                            self.parser.end_of_stream();
                            let detail = error.to_string();
                            let decision = self.decide(Outcome::Ended);
                            let reason = DisconnectReason::Reset;
                            return self.follow(decision, reason, detail, Err(error.into()));
                        }
                    }
                }
            }
        }
    }

    /// Whether and when to try again after `outcome`: the policy's decision, or stop with
    /// reconnecting off.
    fn decide(&mut self, outcome: Outcome<'_>) -> Decision {
        if !self.reconnect {
            return Decision::Stop;
        }
        self.policy
            .decide(outcome, Instant::now(), &mut rand::rng())
    }

    /// Carries out `decision`: the next attempt (announced as [`SourceItem::Reconnecting`]), or
    /// the end, which yields `stopped`.
    fn follow(
        &mut self,
        decision: Decision,
        reason: DisconnectReason,
        detail: String,
        stopped: Result<Option<SourceItem>, EventSourceError>,
    ) -> Result<Option<SourceItem>, EventSourceError> {
        match decision {
            Decision::Stop => {
                self.state = State::Done;
                stopped
            }
            Decision::Retry(retry_in) => {
                self.state = State::Connect { delay: retry_in };
                Ok(Some(SourceItem::Reconnecting {
                    reason,
                    detail,
                    retry_in,
                }))
            }
        }
    }
}
