//! Parser throughput on realistic corpora, side by side with the `eventsource-stream` crate in
//! the same run: small JSON price events, multi-line data and 4 KiB events, each fed in 1 KiB and
//! 16 KiB chunks. Both sides build every event, count it and touch its data length.
//!
//! `cargo bench -p sluice-sse --bench parser -j2`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use sluice_sse::{Item, Limits, Parser};

/// Each corpus is about this many bytes.
const CORPUS_BYTES: usize = 1 << 20;

struct Corpus {
    name: &'static str,
    bytes: Bytes,
    events: usize,
}

fn build(name: &'static str, mut event: impl FnMut(usize) -> String) -> Corpus {
    let mut text = String::with_capacity(CORPUS_BYTES + 8192);
    let mut events = 0;
    while text.len() < CORPUS_BYTES {
        text.push_str(&event(events));
        events += 1;
    }
    Corpus {
        name,
        bytes: Bytes::from(text),
        events,
    }
}

fn corpora() -> Vec<Corpus> {
    let price = build("price", |n| {
        format!(
            "id: {}\nevent: price_update\ndata: {{\"s\":\"BTC-USD\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"q\":{}}}\n\n",
            1_000_000 + n,
            60_000 + n % 997,
            n % 100,
            60_001 + n % 997,
            (n * 7) % 100,
            n % 50
        )
    });
    let multi = build("multiline", |n| {
        let mut event = format!("id: {}\nevent: book\n", 1_000_000 + n);
        for level in 0..(5 + n % 6) {
            event.push_str(&format!(
                "data: {{\"level\":{level},\"px\":{}.{:02},\"qty\":{}}}\n",
                60_000 + level,
                n % 100,
                n % 1000
            ));
        }
        event.push('\n');
        event
    });
    let big = build("4KiB", |n| {
        let mut data = format!("{{\"seq\":{n},\"rows\":[");
        let mut row = 0;
        while data.len() < 4096 - 40 {
            data.push_str(&format!(
                "{{\"k\":{row},\"v\":\"{:08x}\"}},",
                (n * 31 + row) * 2654435761
            ));
            row += 1;
        }
        data.push_str("{}]}");
        format!("id: {}\nevent: snapshot\ndata: {data}\n\n", 1_000_000 + n)
    });
    vec![price, multi, big]
}

fn ours(chunks: &[Bytes]) -> (usize, usize) {
    let mut parser = Parser::new(Limits::default());
    let (mut events, mut data_bytes) = (0, 0);
    for chunk in chunks {
        parser.push(chunk);
        while let Some(item) = parser.next_item().expect("corpus is within limits") {
            if let Item::Event(event) = item {
                events += 1;
                data_bytes += event.data.len();
            }
        }
    }
    (events, data_bytes)
}

fn theirs(chunks: &[Bytes]) -> (usize, usize) {
    let stream = futures::stream::iter(chunks.iter().cloned().map(Ok::<_, Infallible>));
    let mut events_stream = stream.eventsource();
    futures::executor::block_on(async {
        let (mut events, mut data_bytes) = (0, 0);
        while let Some(event) = events_stream.next().await {
            let event = event.expect("corpus is valid");
            events += 1;
            data_bytes += event.data.len();
        }
        (events, data_bytes)
    })
}

fn parser(c: &mut Criterion) {
    for corpus in corpora() {
        eprintln!(
            "corpus {}: {} bytes, {} events, {:.1} bytes/event",
            corpus.name,
            corpus.bytes.len(),
            corpus.events,
            corpus.bytes.len() as f64 / corpus.events as f64
        );
        for chunk_size in [1024, 16 * 1024] {
            let chunks: Vec<Bytes> = (0..corpus.bytes.len())
                .step_by(chunk_size)
                .map(|at| {
                    corpus
                        .bytes
                        .slice(at..(at + chunk_size).min(corpus.bytes.len()))
                })
                .collect();
            // Both sides must agree on the work before we time it.
            let expected = ours(&chunks);
            assert_eq!(expected.0, corpus.events);
            assert_eq!(theirs(&chunks), expected);

            let mut group = c.benchmark_group(format!("{}/{}KiB", corpus.name, chunk_size / 1024));
            group.throughput(Throughput::Bytes(corpus.bytes.len() as u64));
            group.sample_size(20);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(3));
            group.bench_function(BenchmarkId::from_parameter("sluice-sse"), |b| {
                b.iter(|| black_box(ours(black_box(&chunks))))
            });
            group.bench_function(BenchmarkId::from_parameter("eventsource-stream"), |b| {
                b.iter(|| black_box(theirs(black_box(&chunks))))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, parser);
criterion_main!(benches);
