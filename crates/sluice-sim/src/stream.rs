//! One `GET /v1/stream` response: a task that renders deltas into 64 KiB chunks and hands them
//! to the response body through a bounded channel (the client's reading speed pushes back).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults::{AfterEvent, StreamOptions};
use crate::feed::{Feed, Start};
use crate::model::{KeyFormat, delta};
use crate::render;

/// Target size of one body chunk.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the stream task and the body; small, so memory stays bounded and
/// a slow client stops the task.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 2;

/// What the connection task must do to the TCP connection, decided by the stream task.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnControl {
    /// Abort with an RST (SO_LINGER 0, then close).
    pub reset: CancellationToken,
    /// Cut with a FIN in the middle of the response (a proxy's connection TTL).
    pub cut: CancellationToken,
}

pub(crate) struct StreamTask {
    pub feed: Arc<Feed>,
    pub options: StreamOptions,
    pub start: Start,
    pub heartbeat: Duration,
    pub retry: Option<Duration>,
    pub ctl: Option<ConnControl>,
    pub tx: mpsc::Sender<Bytes>,
    pub shutdown: CancellationToken,
}

/// How the stream ended, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientGone,
    Shutdown,
    Closed,
    Reset,
    Cut,
    Stalled,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::Shutdown => "shutdown",
            End::Closed => "closed",
            End::Reset => "reset",
            End::Cut => "cut",
            End::Stalled => "stalled",
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl StreamTask {
    pub async fn run(self) {
        let started = Instant::now();
        let close_at = self.options.close_after.map(|d| started + d);
        let cut_at = self.options.max_age.map(|d| started + d);
        let end = self.stream(close_at, cut_at).await;
        tracing::debug!(end = end.as_str(), "stream ended");
        match end {
            End::Reset | End::Cut => {
                if let Some(ctl) = &self.ctl {
                    if end == End::Reset {
                        ctl.reset.cancel();
                    } else {
                        ctl.cut.cancel();
                    }
                }
                // Hold the body open until the connection is gone: ending it here would let
                // the server finish the response cleanly before the abort.
                tokio::select! {
                    _ = self.tx.closed() => {}
                    _ = self.shutdown.cancelled() => {}
                }
            }
            End::Stalled => {
                // Keep the socket open and silent until the client goes, the proxy TTL
                // strikes, or the server stops.
                tokio::select! {
                    _ = self.tx.closed() => {}
                    _ = self.shutdown.cancelled() => {}
                    _ = sleep_until_opt(cut_at) => {
                        if let Some(ctl) = &self.ctl {
                            ctl.cut.cancel();
                        }
                    }
                }
            }
            End::ClientGone | End::Shutdown | End::Closed => {}
        }
        // Dropping `tx` ends the response body.
    }

    /// Sends one chunk, giving up when a deadline passes first. `Ok` means it was sent.
    async fn send(
        &self,
        chunk: Bytes,
        close_at: Option<Instant>,
        cut_at: Option<Instant>,
    ) -> Result<(), End> {
        tokio::select! {
            // Biased: shutdown and the deadlines win over a send that is ready at the same time.
            biased;
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
            _ = sleep_until_opt(cut_at) => Err(End::Cut),
            _ = sleep_until_opt(close_at) => Err(End::Closed),
            sent = self.tx.send(chunk) => sent.map_err(|_| End::ClientGone),
        }
    }

    /// Waits until the body has taken every chunk sent so far, so the bytes reached the
    /// connection before an RST discards what is still queued.
    async fn drained(&self) -> Result<(), End> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
            permits = self.tx.reserve_many(CHUNKS_IN_FLIGHT) => permits.map(drop).map_err(|_| End::ClientGone),
        }
    }

    async fn stream(&self, close_at: Option<Instant>, cut_at: Option<Instant>) -> End {
        let keys = KeyFormat::new(self.feed.entities);
        let seed = self.feed.seed;
        let entities = self.feed.entities;
        let firehose = self.options.firehose;
        let check_faults = self.options.has_event_faults();
        let heartbeat = self.options.heartbeat.unwrap_or(self.heartbeat);
        let mut head = self.feed.subscribe();
        let mut buf = BytesMut::with_capacity(CHUNK * 2);
        let mut actions = Vec::new();
        let mut next = self.start.next;
        let mut sent: u64 = 0;

        if let Some(retry) = self.retry {
            render::write_retry(
                &mut buf,
                u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
            );
        }
        if let Some((reason, at)) = self.start.reset {
            render::write_reset(&mut buf, reason, at);
        }
        let mut last_write = Instant::now();

        loop {
            let available = if firehose {
                self.feed.max_events.unwrap_or(u64::MAX)
            } else {
                *head.borrow_and_update()
            };
            let mut terminal = None;
            while next <= available && buf.len() < CHUNK {
                render::write_event(&mut buf, &delta(seed, entities, next), keys);
                next += 1;
                sent += 1;
                if check_faults {
                    actions.clear();
                    self.options.after_event(sent, &mut actions);
                    for action in &actions {
                        match *action {
                            AfterEvent::Malformed => render::write_malformed(&mut buf),
                            AfterEvent::Oversized(n) => render::write_oversized(&mut buf, n),
                            AfterEvent::Close => terminal = Some(End::Closed),
                            AfterEvent::Reset => terminal = Some(End::Reset),
                            AfterEvent::Stall => terminal = Some(End::Stalled),
                        }
                    }
                    if terminal.is_some() {
                        break;
                    }
                }
            }
            if !buf.is_empty() {
                if let Err(end) = self.send(buf.split().freeze(), close_at, cut_at).await {
                    return end;
                }
                last_write = Instant::now();
                // Reuse the allocation once the body has released the previous chunks.
                buf.reserve(CHUNK * 2);
            }
            match terminal {
                Some(End::Reset) => {
                    if let Err(end) = self.drained().await {
                        return end;
                    }
                    return End::Reset;
                }
                Some(end) => return end,
                None => {}
            }
            if next <= available {
                continue;
            }
            let heartbeat_at = (!heartbeat.is_zero()).then(|| last_write + heartbeat);
            tokio::select! {
                // Biased: stop conditions first, then new deltas, then heartbeats.
                biased;
                _ = self.shutdown.cancelled() => return End::Shutdown,
                _ = self.tx.closed() => return End::ClientGone,
                _ = sleep_until_opt(cut_at) => return End::Cut,
                _ = sleep_until_opt(close_at) => return End::Closed,
                changed = head.changed(), if !firehose => {
                    if changed.is_err() {
                        return End::Shutdown;
                    }
                }
                _ = sleep_until_opt(heartbeat_at) => {
                    buf.extend_from_slice(render::HEARTBEAT);
                }
            }
        }
    }
}
