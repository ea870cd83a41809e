//! `sluice-sim`: a realistic, deterministic market-feed upstream for people, tests and benchmarks.
//!
//! It serves a REST base state (`GET /v1/snapshot`, and a page at a time as
//! `GET /v1/snapshot/pages`: [`RunningSim::pages_url`]), an SSE delta stream (`GET /v1/stream`) with
//! ids, replay after `Last-Event-ID` from a bounded history, heartbeat comments, and faults on
//! demand (per connection by query parameter, or one-shot via `POST /admin/faults`; see
//! [`faults`]). It can always answer the true current state ([`RunningSim::snapshot`]), so a
//! test can compare what a consumer built against it.
//!
//! It must NOT depend on any other Sluice crate (it is the world outside Sluice, and tests use
//! it as the independent truth), and it must not read the wall clock: all pacing runs on tokio
//! time so tests can pause it.
//!
//! # The feed
//!
//! Delta `seq` (1, 2, 3, …) is a pure function [`delta`]`(seed, entities, seq)`: mostly
//! `price_update` upserts `{"key":"E0042","price":101.25,"qty":17,"version":seq}`, one in
//! [`model::DELETE_ONE_IN`] a `delete` `{"key":"E0042","version":seq}` (a no-op when the key is
//! absent; a deleted key comes back with a later update). The feed's head advances at
//! [`SimConfig::rate`] deltas per second until [`SimConfig::max_events`]; the state at the
//! head is kept incrementally and equals applying deltas `1..=head` in order to an empty map.
//!
//! # The stream
//!
//! Each delta is sent as `id: <seq>\nevent: price_update|delete\ndata: <json>\n\n`. A stream
//! starts at the head (new deltas only), or after `Last-Event-ID` (header, or `?last_event_id=`)
//! when that id is within the last [`SimConfig::history`] deltas: it replays every delta after
//! it, then continues live. Otherwise it starts with one reset event and continues live from
//! the head:
//!
//! ```text
//! id: <head>
//! event: reset
//! data: {"reason":"history_exhausted","snapshot_version":<head>}
//! ```
//!
//! with reason `history_exhausted` (id older than the history), `id_in_future` (id beyond the
//! head) or `invalid_id` (not a decimal number). The reset carries the head as its id, so a
//! client that reconnects after it resumes from there; a consumer keeping state should take a
//! fresh snapshot on it. Idle streams get `: hb` comments every [`SimConfig::heartbeat`]
//! (`?heartbeat=1s` per connection); [`SimConfig::retry`] adds a `retry:` line at the start.
//!
//! # Firehose
//!
//! With `rate` 0, or `?firehose=1` on one connection, a stream is not paced by the clock: it
//! pushes deltas from its start point (after `Last-Event-ID`, else after the head) as fast as
//! the client reads, in 64 KiB chunks, up to `max_events` when set. A firehose stream runs
//! ahead of the shared feed, whose head does not advance with rate 0, so `snapshot()` is not
//! its truth; the truth after a firehose reader has seen delta `n` is [`state_at`]`(seed,
//! entities, n)` (every delta is the same pure function of its `seq` in both modes).

mod config;
mod error;
pub mod faults;
mod feed;
pub mod model;
mod pages;
mod render;
mod server;
mod stream;

pub use config::SimConfig;
pub use error::SimError;
pub use faults::{QueuedFaults, RawParams, Scalar};
pub use model::{Book, Delta, Item, KeyFormat, Snapshot, delta, entity_key, state_at};
pub use render::ResetReason;
pub use server::{RunningSim, serve};
