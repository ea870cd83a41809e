//! The reconnect loop of a browser's `EventSource`, over [`Client`] and the parser.

use std::time::Duration;

use sluice_sse::{Item, Limits, ParseError, Parser};

use crate::connect::{Client, ConnectError, Connection, StreamError};
use crate::reason::DisconnectReason;

/// How an [`EventSource`] behaves between connections.
#[derive(Debug, Clone)]
pub struct EventSourceOptions {
    /// Reconnect after the stream ends or breaks (an `EventSource` does); `false` ends after the first response.
    pub reconnect: bool,
    /// With no byte at all (comments included) for this long, the connection is taken for dead:
    /// reconnect (as a browser's read timeout does), or with `reconnect` off stop with
    /// [`EventSourceError::IdleTimeout`].
    pub idle_timeout: Option<Duration>,
    /// Reconnection time until the server sends `retry:` (browsers use about 3 s).
    pub initial_retry: Duration,
    /// Upper bound of the delay when connection attempts fail one after another (never below
    /// [`FAILED_ATTEMPT_FLOOR`] nor the reconnection time).
    pub max_retry: Duration,
    /// `Last-Event-ID` for the first request (a resumed position), empty for none.
    pub last_event_id: String,
    /// Parser limits (line and event size).
    pub limits: Limits,
}

impl Default for EventSourceOptions {
    fn default() -> Self {
        EventSourceOptions {
            reconnect: true,
            idle_timeout: None,
            initial_retry: Duration::from_secs(3),
            max_retry: Duration::from_secs(60),
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

/// The shortest wait after a failed attempt (a connection that could not be made, or a stream
/// that ended before it dispatched an event), whatever `retry:`, `Retry-After` or the initial
/// reconnection time say: a server answering `retry: 0` and closing, or `--retry 0ms` against a
/// refusing server, must not reconnect in a busy loop. Consecutive failures double it.
pub const FAILED_ATTEMPT_FLOOR: Duration = Duration::from_secs(1);

enum State {
    Connect { delay: Duration },
    Streaming(Connection),
    Done,
}

/// A reconnecting reader of one SSE endpoint, as the HTML `EventSource` behaves.
///
/// Sends `Last-Event-ID` (the last id seen, which persists across events and reconnects) on every
/// reconnect, honours `retry:`, stops on 204, retries overload and outage statuses (honouring
/// `Retry-After`) with exponential backoff, and fails on other statuses and wrong content types.
pub struct EventSource {
    client: Client,
    options: EventSourceOptions,
    parser: Parser,
    state: State,
    retry: Duration,
    /// Failed attempts in a row (reset by a dispatched event).
    failures: u32,
    /// Whether the current connection dispatched an event (so its end is not a failure).
    dispatched: bool,
}

impl EventSource {
    /// Creates the source; nothing is sent until the first [`EventSource::next`].
    pub fn new(client: Client, options: EventSourceOptions) -> EventSource {
        let parser = Parser::new(options.limits).with_last_event_id(&options.last_event_id);
        EventSource {
            client,
            retry: options.initial_retry,
            options,
            parser,
            state: State::Connect {
                delay: Duration::ZERO,
            },
            failures: 0,
            dispatched: false,
        }
    }

    /// The last event id in force (what the next reconnect would send).
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The reconnection time currently in force (changed by `retry:`).
    pub fn reconnection_time(&self) -> Duration {
        self.retry
    }

    /// The next item; `Ok(None)` once the stream ended and reconnecting is off.
    pub async fn next(&mut self) -> Result<Option<SourceItem>, EventSourceError> {
        loop {
            if let Some(item) = self.parser.next_item()? {
                match &item {
                    Item::Retry(ms) => self.retry = crate::reconnection_time(*ms),
                    Item::Event(_) => {
                        self.dispatched = true;
                        self.failures = 0;
                    }
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
                            self.dispatched = false;
                            self.state = State::Streaming(connection);
                            return Ok(Some(SourceItem::Opened { last_event_id }));
                        }
                        Err(error) => {
                            if !(self.options.reconnect && error.is_retryable()) {
                                self.state = State::Done;
                                return Err(error.into());
                            }
                            self.failures = self.failures.saturating_add(1);
                            let backoff = self.backoff();
                            let retry_in = error.retry_after().map_or(backoff, |d| d.max(backoff));
                            self.state = State::Connect { delay: retry_in };
                            return Ok(Some(SourceItem::Reconnecting {
                                reason: error.disconnect_reason(),
                                detail: error.to_string(),
                                retry_in,
                            }));
                        }
                    }
                }
                State::Streaming(connection) => {
                    let chunk = match self.options.idle_timeout {
                        Some(limit) => {
                            match tokio::time::timeout(limit, connection.next_chunk()).await {
                                Ok(chunk) => chunk,
                                Err(_) => {
                                    self.parser.end_of_stream();
                                    if !self.options.reconnect {
                                        self.state = State::Done;
                                        return Err(EventSourceError::IdleTimeout(limit));
                                    }
                                    return Ok(Some(self.schedule_reconnect(
                                        DisconnectReason::SilentDrop,
                                        EventSourceError::IdleTimeout(limit).to_string(),
                                    )));
                                }
                            }
                        }
                        None => connection.next_chunk().await,
                    };
                    match chunk {
                        Ok(Some(bytes)) => self.parser.push(&bytes),
                        Ok(None) => {
                            self.parser.end_of_stream();
                            if !self.options.reconnect {
                                self.state = State::Done;
                                return Ok(None);
                            }
                            return Ok(Some(self.schedule_reconnect(
                                DisconnectReason::Eof,
                                "server closed the stream".to_owned(),
                            )));
                        }
                        Err(error) => {
                            self.parser.end_of_stream();
                            if !self.options.reconnect {
                                self.state = State::Done;
                                return Err(error.into());
                            }
                            return Ok(Some(
                                self.schedule_reconnect(DisconnectReason::Reset, error.to_string()),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// The next attempt after a connection ended: the reconnection time when it dispatched an
    /// event, else (a failed attempt) the backoff.
    fn schedule_reconnect(&mut self, reason: DisconnectReason, detail: String) -> SourceItem {
        let retry_in = if self.dispatched {
            self.retry
        } else {
            self.failures = self.failures.saturating_add(1);
            self.backoff()
        };
        self.state = State::Connect { delay: retry_in };
        SourceItem::Reconnecting {
            reason,
            detail,
            retry_in,
        }
    }

    /// The delay after the latest of `self.failures` consecutive failed attempts.
    fn backoff(&self) -> Duration {
        failed_attempt_delay(self.retry, self.failures, self.options.max_retry)
    }
}

/// The delay after the `failures`-th consecutive failed attempt: exponential from the
/// reconnection time `retry`, never below [`FAILED_ATTEMPT_FLOOR`], capped at `max_retry` (or at
/// the floor or `retry`, where those are higher).
fn failed_attempt_delay(retry: Duration, failures: u32, max_retry: Duration) -> Duration {
    let base = retry.max(FAILED_ATTEMPT_FLOOR);
    let exponent = failures.saturating_sub(1).min(16);
    base.saturating_mul(1u32 << exponent)
        .min(max_retry.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_wait_at_least_the_floor_even_with_a_zero_retry() {
        let max = Duration::from_secs(60);
        let delays: Vec<Duration> = (1..=8)
            .map(|n| failed_attempt_delay(Duration::ZERO, n, max))
            .collect();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            failed_attempt_delay(Duration::ZERO, 1, Duration::ZERO),
            FAILED_ATTEMPT_FLOOR
        );
    }

    #[test]
    fn a_longer_reconnection_time_is_the_base_and_may_pass_the_cap() {
        let retry = Duration::from_secs(3);
        assert_eq!(
            failed_attempt_delay(retry, 1, Duration::from_secs(60)),
            retry
        );
        assert_eq!(
            failed_attempt_delay(retry, 3, Duration::from_secs(60)),
            Duration::from_secs(12)
        );
        let long = Duration::from_secs(120);
        assert_eq!(failed_attempt_delay(long, 5, Duration::from_secs(60)), long);
        assert_eq!(
            failed_attempt_delay(Duration::ZERO, u32::MAX, Duration::MAX),
            FAILED_ATTEMPT_FLOOR * (1 << 16)
        );
    }
}
