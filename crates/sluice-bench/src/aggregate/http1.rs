//! The little HTTP/1.1 the harness's keep-alive clients speak: one response with a
//! `content-length` read off the connection. It must not be used for anything but loopback
//! answers of the aggregator.

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};

/// A keep-alive connection to `addr` (Nagle off): its buffered read half (`capacity` bytes) and
/// its write half.
pub async fn connect(
    addr: &str,
    capacity: usize,
) -> anyhow::Result<(
    tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    Ok((tokio::io::BufReader::with_capacity(capacity, read), write))
}

/// Paces a client's requests at `rate` per second (`None`: back to back).
pub struct Pacer {
    start: tokio::time::Instant,
    sent: u64,
    rate: Option<f64>,
}

impl Pacer {
    /// Starts now.
    pub fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            start: tokio::time::Instant::now(),
            sent: 0,
            rate,
        }
    }

    /// Waits until the next request is due; returns its number (from 1).
    pub async fn next(&mut self) -> u64 {
        if let Some(rate) = self.rate {
            let due = self.start + std::time::Duration::from_secs_f64(self.sent as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        self.sent += 1;
        self.sent
    }
}

/// Reads one HTTP/1.1 response with a `content-length` into `body`; returns its status.
pub async fn read_response<R: AsyncBufRead + Unpin>(
    read: &mut R,
    line: &mut String,
    body: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    line.clear();
    read.read_line(line).await?;
    if line.is_empty() {
        bail!("the aggregator closed the connection");
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP status line: {:?}", line.trim_end()))?;
    let mut length = None;
    loop {
        line.clear();
        read.read_line(line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.context("a response without content-length")?;
    body.resize(length, 0);
    read.read_exact(body).await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::BufReader;

    use super::*;

    #[tokio::test]
    async fn a_response_is_read_by_its_content_length() {
        let wire = b"HTTP/1.1 410 Gone\r\ncontent-type: application/json\r\nContent-Length: 4\r\n\r\nabcdHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let mut read = BufReader::new(&wire[..]);
        let (mut line, mut body) = (String::new(), Vec::new());
        let status = read_response(&mut read, &mut line, &mut body).await;
        assert_eq!(status.unwrap(), 410);
        assert_eq!(body, b"abcd");
        let status = read_response(&mut read, &mut line, &mut body).await;
        assert_eq!(status.unwrap(), 200);
        assert_eq!(body, b"{}");
        let closed = read_response(&mut read, &mut line, &mut body).await;
        assert!(closed.is_err());
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut read = BufReader::new(&no_length[..]);
        assert!(
            read_response(&mut read, &mut line, &mut body)
                .await
                .is_err()
        );
    }
}
