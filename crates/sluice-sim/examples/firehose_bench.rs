//! Firehose throughput of the simulator to one client.
//!
//! Starts the simulator in-process in firehose mode, reads `GET /v1/stream` over a raw tokio
//! `TcpStream` for a number of seconds (first argument, default 5) and prints events/s and
//! bytes/s. Events are counted as `\n\n` terminators in the body (the simulator only cuts
//! chunks between events, so chunk framing never splits one).
//!
//! With `parse` as second argument the client is instead reqwest feeding every body chunk to
//! `sluice_sse::Parser`, counting parsed events: the cost of a realistic consumer included.
//!
//! `cargo run -p sluice-sim --release --example firehose_bench -- 5 [parse]`

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_sim::{RunningSim, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("seconds must be a number"))
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let parse = std::env::args().nth(2).as_deref() == Some("parse");
    runtime.block_on(run(Duration::from_secs(seconds), parse));
}

fn report(what: &str, events: u64, bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what}: {events} events, {bytes} bytes in {secs:.2}s: {:.0} events/s, {:.1} MiB/s, {:.1} bytes/event",
        events as f64 / secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
        bytes as f64 / events as f64,
    );
}

/// Reads through reqwest and the SSE parser, counting parsed events.
async fn run_parsed(sim: &RunningSim, duration: Duration) {
    use sluice_sse::{Item, Limits, Parser};
    let mut response = reqwest::get(sim.stream_url()).await.unwrap();
    let mut parser = Parser::new(Limits::default());
    let (mut events, mut bytes) = (0u64, 0u64);
    let warmup_until = Instant::now() + Duration::from_millis(500);
    let mut started = None;
    while let Some(chunk) = response.chunk().await.unwrap() {
        parser.push(&chunk);
        let mut n = 0;
        while let Some(item) = parser.next_item().unwrap() {
            if matches!(item, Item::Event(_)) {
                n += 1;
            }
        }
        let now = Instant::now();
        let Some(start) = started else {
            if now >= warmup_until {
                started = Some(now);
            }
            continue;
        };
        events += n;
        bytes += chunk.len() as u64;
        if now - start >= duration {
            report(
                "firehose via reqwest + sluice-sse",
                events,
                bytes,
                now - start,
            );
            return;
        }
    }
}

async fn run(duration: Duration, parse: bool) {
    let config = SimConfig {
        rate: 0.0,
        ..SimConfig::default()
    };
    let sim = RunningSim::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    if parse {
        run_parsed(&sim, duration).await;
        sim.shutdown().await;
        return;
    }
    let mut tcp = TcpStream::connect(sim.addr()).await.unwrap();
    tcp.write_all(b"GET /v1/stream HTTP/1.1\r\nhost: sim\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();

    let finder = memchr::memmem::Finder::new(b"\n\n");
    let mut buf = vec![0u8; 256 * 1024];
    let mut events: u64 = 0;
    let mut bytes: u64 = 0;
    let mut last = 0u8;
    // Warm up for a moment so connection setup is not measured.
    let warmup_until = Instant::now() + Duration::from_millis(500);
    let mut started = None;
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended");
        let chunk = &buf[..n];
        let now = Instant::now();
        let start = match started {
            Some(start) => start,
            None if now >= warmup_until => {
                started = Some(now);
                last = chunk[n - 1];
                continue;
            }
            None => {
                last = chunk[n - 1];
                continue;
            }
        };
        bytes += n as u64;
        events += finder.find_iter(chunk).count() as u64;
        if last == b'\n' && chunk[0] == b'\n' {
            events += 1;
        }
        last = chunk[n - 1];
        let elapsed = now - start;
        if elapsed >= duration {
            report("firehose via raw tcp", events, bytes, elapsed);
            break;
        }
    }
    drop(tcp);
    sim.shutdown().await;
}
