//! The HTTP side of reading one Server-Sent Events endpoint.
//!
//! This crate opens a `text/event-stream` response (through an HTTP, HTTPS or SOCKS5 proxy when one is
//! given), classifies every way that can fail into bounded error kinds, hands body bytes to the
//! [`sluice_sse::Parser`], and offers [`EventSource`]: the reconnect loop a browser's `EventSource`
//! runs (`Last-Event-ID` on every reconnect, `retry:` honoured, stop on 204), over
//! [`ReconnectPolicy`]: the one set of reconnect rules, which the worker's connection state machine
//! uses as well.
//!
//! It must not know about Kafka, checkpoints or configuration files, and it must never put a secret
//! (proxy password, header value, URL query) into an error message or a log line: URLs shown to
//! people go through [`redact::redact_url`].

pub mod backoff;
mod connect;
mod error;
mod eventsource;
mod fetch;
mod first;
mod link;
pub mod oauth;
mod reason;
pub mod reconnect;
pub mod redact;
mod redirect;
mod request;
pub mod server_delay;

pub use backoff::{BackoffError, ExponentialBackoff};
pub use connect::{Client, ClientOptions, Connection};
pub use error::{ConnectError, StreamError};
pub use eventsource::{EventSource, EventSourceError, EventSourceOptions, SourceItem};
pub use fetch::{FetchError, Page};
pub use link::{LinkError, next_in_link_header, resolve_link};
pub use reason::DisconnectReason;
pub use reconnect::{Decision, HardFailure, Outcome, ReconnectOptions, ReconnectPolicy};
pub use request::RequestBody;
pub use server_delay::{MAX_SERVER_DELAY, reconnection_time};
