//! Reading an HTTP request head off a raw socket, for tests that answer with hand-written bytes.
//!
//! What it must NOT do: parse or judge the request (the test does), or read past what one read
//! call returns after the blank line.

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Reads an HTTP request head (through its blank line) from `stream`, or what arrived before the
/// peer closed or failed.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}
