//! An SSE endpoint with a compressed body, for the client's decompression tests: it accepts one
//! request on loopback, records its `Accept-Encoding`, and answers `200 text/event-stream` with
//! `Content-Encoding` set (HTTP/1.1, chunked). Each [`CompressedSse::send`] is compressed and
//! flushed on its own and written as one chunk, so a test can hold the next write back until the
//! client has shown it got the previous one; [`CompressedSse::finish`] ends the compressed stream
//! and the response.
//!
//! It must NOT accept a second request or reach beyond loopback.

use std::sync::{Arc, Mutex};

use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A `Content-Encoding` the endpoint can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 3] = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// One compressor writing into a buffer the endpoint drains after each flush.
enum Compressor {
    Gzip(GzipEncoder<Vec<u8>>),
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl Compressor {
    fn new(encoding: Encoding) -> Compressor {
        match encoding {
            Encoding::Gzip => Compressor::Gzip(GzipEncoder::new(Vec::new())),
            Encoding::Brotli => Compressor::Brotli(Box::new(BrotliEncoder::new(Vec::new()))),
            Encoding::Zstd => Compressor::Zstd(ZstdEncoder::new(Vec::new())),
        }
    }

    fn writer(&mut self) -> &mut (dyn AsyncWrite + Unpin + Send) {
        match self {
            Compressor::Gzip(e) => e,
            Compressor::Brotli(e) => e,
            Compressor::Zstd(e) => e,
        }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Compressor::Gzip(e) => e.get_mut(),
            Compressor::Brotli(e) => e.get_mut(),
            Compressor::Zstd(e) => e.get_mut(),
        })
    }

    /// `bytes` compressed and flushed: everything the client needs to decompress them now.
    async fn flushed(&mut self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        self.writer().write_all(bytes).await?;
        self.writer().flush().await?;
        Ok(self.take())
    }

    /// The end of the compressed stream.
    async fn finished(&mut self) -> std::io::Result<Vec<u8>> {
        self.writer().shutdown().await?;
        Ok(self.take())
    }
}

/// The endpoint; see the module doc.
pub struct CompressedSse {
    url: String,
    accept_encoding: Arc<Mutex<Option<String>>>,
    writes: mpsc::UnboundedSender<Option<Vec<u8>>>,
}

impl CompressedSse {
    /// Listens on a loopback port and serves one request in the background.
    pub async fn start(encoding: Encoding) -> std::io::Result<CompressedSse> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/stream", listener.local_addr()?);
        let accept_encoding = Arc::new(Mutex::new(None));
        let (writes, mut queued) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
        let seen = accept_encoding.clone();
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let head = crate::read_head(&mut socket).await;
            if !head.ends_with(b"\r\n\r\n") {
                return;
            }
            let header = String::from_utf8_lossy(&head).lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("accept-encoding")
                    .then(|| value.trim().to_owned())
            });
            if let Ok(mut slot) = seen.lock() {
                *slot = Some(header.unwrap_or_default());
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: {}\r\n\
                 transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n",
                encoding.token()
            );
            if socket.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            let mut compressor = Compressor::new(encoding);
            while let Some(write) = queued.recv().await {
                let (compressed, last) = match write {
                    Some(bytes) => (compressor.flushed(&bytes).await, false),
                    None => (compressor.finished().await, true),
                };
                let Ok(compressed) = compressed else {
                    return;
                };
                let mut chunk = format!("{:x}\r\n", compressed.len()).into_bytes();
                chunk.extend_from_slice(&compressed);
                chunk.extend_from_slice(b"\r\n");
                if last {
                    chunk.extend_from_slice(b"0\r\n\r\n");
                }
                if socket.write_all(&chunk).await.is_err() || last {
                    let _ = socket.shutdown().await;
                    return;
                }
            }
        });
        Ok(CompressedSse {
            url,
            accept_encoding,
            writes,
        })
    }

    /// The stream's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request's `Accept-Encoding`: `None` before the request came, empty when it had none.
    pub fn accept_encoding(&self) -> Option<String> {
        self.accept_encoding.lock().ok().and_then(|s| s.clone())
    }

    /// Compresses `bytes`, flushes and writes them as one chunk (once the request came).
    pub fn send(&self, bytes: impl Into<Vec<u8>>) {
        let _ = self.writes.send(Some(bytes.into()));
    }

    /// Ends the compressed stream and the response.
    pub fn finish(&self) {
        let _ = self.writes.send(None);
    }
}
