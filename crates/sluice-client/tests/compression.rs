//! Compressed bodies over real HTTP on loopback: the client asks for gzip, br and zstd, and
//! hands on what each flushed write holds as soon as it arrives (a server flushing per event must
//! not have its events held back until more bytes come); with compression off it asks for none.
//! Base documents too, their size limit counting decompressed bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_client::{Client, ClientOptions, Connection};
use sluice_testkit::compressed::{CompressedSse, Encoding};

/// Bounds a read that must succeed, so a client that holds bytes back fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

/// Reads chunks until the decompressed bytes read so far contain `text`; returns them all.
async fn read_until(connection: &mut Connection, seen: &mut Vec<u8>, text: &str) {
    while !String::from_utf8_lossy(seen).contains(text) {
        let chunk = tokio::time::timeout(LIMIT, connection.next_chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{text:?} never arrived; got {:?}",
                    String::from_utf8_lossy(seen)
                )
            })
            .expect("a chunk")
            .expect("the body goes on");
        seen.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn each_encoding_is_asked_for_and_every_flushed_event_arrives_at_once() {
    for encoding in Encoding::ALL {
        let server = CompressedSse::start(encoding).await.unwrap();
        let client = Client::new(server.url().parse().unwrap(), ClientOptions::default()).unwrap();
        let mut connection = client.connect("").await.expect("connected");
        let asked = server.accept_encoding().expect("the request came");
        for token in ["gzip", "br", "zstd"] {
            assert!(
                asked.contains(token),
                "{encoding:?}: Accept-Encoding {asked:?}"
            );
        }

        let mut seen = Vec::new();
        server.send("id: 1\ndata: one\n\n");
        // Nothing else is written until the first event is out of the decompressor.
        read_until(&mut connection, &mut seen, "data: one\n\n").await;
        server.send(": heartbeat\n\n");
        read_until(&mut connection, &mut seen, ": heartbeat\n\n").await;
        server.send("id: 2\ndata: two\n\n");
        server.finish();
        while let Some(chunk) = tokio::time::timeout(LIMIT, connection.next_chunk())
            .await
            .expect("the end arrives")
            .expect("a clean end")
        {
            seen.extend_from_slice(&chunk);
        }
        assert_eq!(
            String::from_utf8(seen).unwrap(),
            "id: 1\ndata: one\n\n: heartbeat\n\nid: 2\ndata: two\n\n",
            "{encoding:?}: the decompressed body, byte for byte"
        );
    }
}

#[tokio::test]
async fn with_compression_off_no_encoding_is_asked_for() {
    let server = CompressedSse::start(Encoding::Gzip).await.unwrap();
    let options = ClientOptions {
        compression: false,
        ..ClientOptions::default()
    };
    let client = Client::new(server.url().parse().unwrap(), options).unwrap();
    let _connection = client.connect("").await.expect("connected");
    assert_eq!(server.accept_encoding().as_deref(), Some(""));
}

#[tokio::test]
async fn a_compressed_base_document_is_decompressed_and_its_limit_counts_decompressed_bytes() {
    for encoding in Encoding::ALL {
        let server = CompressedSse::start(encoding).await.unwrap();
        server.send(r#"{"version":7,"items":[{"key":"a"}]}"#);
        server.finish();
        let client = Client::new(server.url().parse().unwrap(), ClientOptions::default()).unwrap();
        let document = client
            .fetch_document(LIMIT, 1 << 20)
            .await
            .expect("fetched");
        assert_eq!(
            &document[..],
            br#"{"version":7,"items":[{"key":"a"}]}"#,
            "{encoding:?}"
        );

        // A few kilobytes on the wire, 16 MiB decompressed: refused at the 1 MiB limit.
        let bomb_server = CompressedSse::start(encoding).await.unwrap();
        bomb_server.send(vec![b' '; 16 << 20]);
        bomb_server.finish();
        let client =
            Client::new(bomb_server.url().parse().unwrap(), ClientOptions::default()).unwrap();
        let error = client.fetch_document(LIMIT, 1 << 20).await.unwrap_err();
        assert_eq!(error.kind(), "too_large", "{encoding:?}: {error}");
    }
}
