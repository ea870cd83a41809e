//! The connection cap: a listener that hands the server at most `http.max_connections`
//! connections at once. One more is answered `503 Service Unavailable` with `Retry-After` and
//! closed (counted in `sluice_aggregator_http_connections_rejected_total`), so a flood of
//! clients, or `/stream` clients that never leave, cannot take the process's memory or file
//! descriptors.
//!
//! It must not parse requests: the refusal is written without reading what the client sent
//! (drained only so that closing the socket does not reset it before the answer is read).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Refusals being written at once; past it a connection over the cap is closed unanswered.
const REFUSING: usize = 64;

/// How long a refusal may take (writing it and draining the request).
const REFUSAL_TIME: Duration = Duration::from_secs(1);

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain; charset=utf-8\r\n\
    content-length: 36\r\n\
    retry-after: 1\r\n\
    connection: close\r\n\r\n\
    too many connections: http cap hit\r\n";

/// A TCP listener admitting at most a fixed number of connections at once.
pub struct CappedListener {
    inner: TcpListener,
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    connections: IntGauge,
    rejected: IntCounter,
}

impl CappedListener {
    /// Caps `inner` at `max` connections; `connections` is set to the number open,
    /// `rejected` counts the refused ones.
    pub fn new(
        inner: TcpListener,
        max: usize,
        connections: IntGauge,
        rejected: IntCounter,
    ) -> CappedListener {
        CappedListener {
            inner,
            open: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            refusing: Arc::new(Semaphore::new(REFUSING)),
            connections,
            rejected,
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Admitted, SocketAddr) {
        loop {
            // axum's accept: retries (after a pause) on errors such as too many open files.
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match Arc::clone(&self.open).try_acquire_owned() {
                Ok(permit) => {
                    self.connections.inc();
                    let admitted = Admitted {
                        stream,
                        _permit: permit,
                        connections: self.connections.clone(),
                    };
                    return (admitted, addr);
                }
                Err(_) => {
                    self.rejected.inc();
                    tracing::debug!(%addr, "http connection over the cap refused");
                    if let Ok(slot) = Arc::clone(&self.refusing).try_acquire_owned() {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream)).await;
                            drop(slot);
                        });
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Answers 503, then reads what the client sent until it closes (bounded by the caller's
/// timeout), so the close is a FIN after the answer rather than a reset.
async fn refuse(mut stream: TcpStream) {
    if stream.write_all(REFUSAL).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// An admitted connection: its place under the cap is held until it closes.
pub struct Admitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    connections: IntGauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.dec();
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::REFUSAL;

    #[test]
    fn the_refusal_states_its_body_length() {
        let text = std::str::from_utf8(REFUSAL).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
