//! `sluice tail` against compressed streams over real HTTP: each encoding's events come out as
//! they were sent, and a compression bomb (a few kilobytes that decompress to megabytes of one
//! line) ends at the parser's line limit, exit 6, instead of growing memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use sluice_testkit::compressed::{CompressedSse, Encoding};
use support::{ids, lines, stderr, tail};

#[tokio::test]
async fn every_encoding_is_decompressed_into_the_events_sent() {
    for encoding in Encoding::ALL {
        let server = CompressedSse::start(encoding).await.unwrap();
        for id in 1..=5 {
            server.send(format!("id: {id}\nevent: price\ndata: {{\"n\":{id}}}\n\n"));
        }
        server.finish();
        let output = tail(&[server.url(), "--no-reconnect"]).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{encoding:?}: {}",
            stderr(&output)
        );
        assert_eq!(ids(&lines(&output)), vec![1, 2, 3, 4, 5], "{encoding:?}");
    }
}

#[tokio::test]
async fn a_compression_bomb_ends_at_the_line_limit() {
    for encoding in Encoding::ALL {
        let server = CompressedSse::start(encoding).await.unwrap();
        // 16 MiB of one data line: a few kilobytes on the wire.
        let mut bomb = b"data: ".to_vec();
        bomb.resize(16 << 20, b'a');
        server.send(bomb);
        server.finish();
        let output = tail(&[server.url(), "--no-reconnect", "--max-line-bytes", "65536"]).await;
        assert_eq!(
            output.status.code(),
            Some(6),
            "{encoding:?}: the parse limit: {}",
            stderr(&output)
        );
    }
}
