//! Golden streams: one table entry per rule of WHATWG HTML "Interpreting an event stream",
//! including the spec's own examples. Every stream is also fed byte by byte.

#![allow(clippy::unwrap_used)]

use sluice_sse::{Event, Item, Limits, ParseError, Parser, Text};

fn ev(id: &str, event: &str, data: &str) -> Item {
    Item::Event(Event {
        id: Text::copy_from_str(id),
        event: Text::copy_from_str(event),
        data: Text::copy_from_str(data),
    })
}

fn msg(data: &str) -> Item {
    ev("", "message", data)
}

fn comment(text: &str) -> Item {
    Item::Comment(Text::copy_from_str(text))
}

/// Parses `chunks` fed in order; stops at the first error.
fn parse_with(parser: &mut Parser, chunks: &[&[u8]]) -> Result<Vec<Item>, ParseError> {
    let mut items = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(item) = parser.next_item()? {
            items.push(item);
        }
    }
    Ok(items)
}

fn parse_chunks(chunks: &[&[u8]]) -> Vec<Item> {
    parse_with(&mut Parser::default(), chunks).unwrap()
}

/// Parses in one chunk and byte by byte, asserts both agree, and returns the items.
fn parse(stream: &[u8]) -> Vec<Item> {
    let whole = parse_chunks(&[stream]);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(
        parse_chunks(&bytes),
        whole,
        "byte-by-byte differs for {stream:?}"
    );
    whole
}

#[test]
fn spec_example_multi_line_data_is_joined_with_lf() {
    assert_eq!(
        parse(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
        [msg("YHOO\n+2\n10")]
    );
}

#[test]
fn spec_example_ids_comments_and_trailing_unterminated_event() {
    let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
    assert_eq!(
        parse(stream),
        [
            comment(" test stream"),
            ev("1", "message", "first event"),
            ev("", "message", "second event"),
        ]
    );
}

#[test]
fn spec_example_empty_data_lines_make_empty_and_newline_events() {
    assert_eq!(parse(b"data\n\ndata\ndata\n\ndata:"), [msg(""), msg("\n")]);
}

#[test]
fn spec_example_one_leading_space_is_optional() {
    assert_eq!(
        parse(b"data:test\n\ndata: test\n\n"),
        [msg("test"), msg("test")]
    );
}

#[test]
fn only_one_leading_space_is_removed() {
    assert_eq!(parse(b"data:   x \n\n"), [msg("  x ")]);
}

#[test]
fn lf_cr_and_crlf_all_end_lines() {
    let expected = [msg("a\nb"), msg("c")];
    assert_eq!(parse(b"data: a\ndata: b\n\ndata: c\n\n"), expected);
    assert_eq!(parse(b"data: a\rdata: b\r\rdata: c\r\r"), expected);
    assert_eq!(
        parse(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"),
        expected
    );
    assert_eq!(parse(b"data: a\r\ndata: b\r\rdata: c\n\r\n"), expected);
}

#[test]
fn crlf_split_across_chunks_is_one_line_end() {
    assert_eq!(
        parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
        [msg("a\nb")]
    );
}

#[test]
fn cr_at_chunk_end_dispatches_without_waiting() {
    let mut parser = Parser::default();
    parser.push(b"data: a\r\r");
    assert_eq!(parser.next_item().unwrap(), Some(msg("a")));
    assert_eq!(parser.next_item().unwrap(), None);
    parser.push(b"\ndata: b\n\n");
    assert_eq!(parser.next_item().unwrap(), Some(msg("b")));
}

#[test]
fn lf_cr_is_two_line_ends() {
    assert_eq!(parse(b"data: a\n\rdata: b\n\n"), [msg("a"), msg("b")]);
}

#[test]
fn bom_at_stream_start_is_skipped_once() {
    assert_eq!(parse(b"\xEF\xBB\xBFdata: a\n\n"), [msg("a")]);
    // A second BOM is part of the field name, which is then unknown.
    assert_eq!(
        parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"),
        [msg("b")]
    );
    // A BOM later in the stream is not skipped either.
    assert_eq!(parse(b"\n\xEF\xBB\xBFdata: a\n\ndata: b\n\n"), [msg("b")]);
}

#[test]
fn bom_split_across_chunks_is_skipped() {
    assert_eq!(
        parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]),
        [msg("a")]
    );
}

#[test]
fn partial_bom_followed_by_other_bytes_is_decoded_as_text() {
    assert_eq!(
        parse(b"\xEF\xBBdata: a\n\n:\xEF\xBB\n"),
        [comment("\u{FFFD}")]
    );
}

#[test]
fn comments_are_surfaced_verbatim() {
    assert_eq!(
        parse(b":\n: heartbeat\n:: x\n"),
        [comment(""), comment(" heartbeat"), comment(": x")]
    );
}

#[test]
fn comments_do_not_disturb_the_event_being_read() {
    assert_eq!(
        parse(b"data: a\n: ping\ndata: b\n\n"),
        [comment(" ping"), msg("a\nb")]
    );
}

#[test]
fn event_field_sets_type_and_resets_after_dispatch() {
    assert_eq!(
        parse(b"event: price\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"),
        [ev("", "price", "1"), msg("2"), msg("3")]
    );
}

#[test]
fn block_without_data_dispatches_nothing_but_resets_type() {
    assert_eq!(parse(b"event: lonely\n\ndata: x\n\n"), [msg("x")]);
}

#[test]
fn line_without_colon_is_field_with_empty_value() {
    assert_eq!(parse(b"event: t\nevent\ndata\n\n"), [msg("")]);
}

#[test]
fn last_event_id_persists_across_events() {
    assert_eq!(
        parse(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"),
        [
            ev("7", "message", "a"),
            ev("7", "message", "b"),
            ev("8", "message", "c")
        ]
    );
}

#[test]
fn empty_id_resets_last_event_id() {
    let mut parser = Parser::default().with_last_event_id("5");
    let items = parse_with(&mut parser, &[b"id:\ndata: a\n\n"]).unwrap();
    assert_eq!(items, [msg("a")]);
    assert_eq!(parser.last_event_id(), "");
}

#[test]
fn id_containing_nul_is_ignored() {
    assert_eq!(
        parse(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"),
        [ev("1", "message", "a"), ev("1", "message", "b")]
    );
}

#[test]
fn id_in_block_without_data_still_becomes_last_event_id() {
    let mut parser = Parser::default();
    let items = parse_with(&mut parser, &[b"id: 9\n\ndata: a\n\n"]).unwrap();
    assert_eq!(items, [ev("9", "message", "a")]);
    assert_eq!(parser.last_event_id(), "9");
}

#[test]
fn seeded_last_event_id_is_carried_by_events_without_id() {
    let mut parser = Parser::default().with_last_event_id("41");
    assert_eq!(parser.last_event_id(), "41");
    let items = parse_with(&mut parser, &[b"data: a\n\nid: 42\ndata: b\n\n"]).unwrap();
    assert_eq!(items, [ev("41", "message", "a"), ev("42", "message", "b")]);
}

#[test]
fn retry_with_only_digits_is_surfaced_immediately() {
    assert_eq!(
        parse(b"data: a\nretry: 1500\n\n"),
        [Item::Retry(1500), msg("a")]
    );
    assert_eq!(parse(b"retry:0\n"), [Item::Retry(0)]);
    assert_eq!(parse(b"retry: 007\n"), [Item::Retry(7)]);
}

#[test]
fn retry_that_is_not_only_digits_is_ignored() {
    for line in [
        "retry\n",
        "retry:\n",
        "retry: \n",
        "retry: 1.5\n",
        "retry: -1\n",
        "retry: +1\n",
        "retry: 1 \n",
        "retry:  1\n",
        "retry: 1e3\n",
        "retry: ١\n",
    ] {
        assert_eq!(parse(line.as_bytes()), [], "{line:?}");
    }
}

#[test]
fn retry_overflowing_u64_is_ignored() {
    assert_eq!(
        parse(b"retry: 18446744073709551615\n"),
        [Item::Retry(u64::MAX)]
    );
    assert_eq!(parse(b"retry: 18446744073709551616\n"), []);
    assert_eq!(parse(b"retry: 99999999999999999999999\n"), []);
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        parse(b"foo: bar\nData: x\ndata : y\n data: z\ndata: a\n\n"),
        [msg("a")]
    );
}

#[test]
fn unfinished_event_is_discarded_at_end_of_stream() {
    let mut parser = Parser::default();
    let items = parse_with(&mut parser, &[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]).unwrap();
    assert_eq!(items, [ev("1", "message", "a")]);
    parser.end_of_stream();
    assert_eq!(parser.last_event_id(), "1");
    let items = parse_with(&mut parser, &[b"data: c\n\n"]).unwrap();
    assert_eq!(items, [ev("1", "message", "c")]);
}

#[test]
fn end_of_stream_discards_partial_line_and_rearms_bom() {
    let mut parser = Parser::default();
    let items = parse_with(&mut parser, &[b"\xEF\xBB\xBFdata: a\n\ndata: par"]).unwrap();
    assert_eq!(items, [msg("a")]);
    parser.end_of_stream();
    let items = parse_with(&mut parser, &[b"\xEF\xBB\xBFtial\n\ndata: b\n\n"]).unwrap();
    assert_eq!(items, [msg("b")]);
}

#[test]
fn end_of_stream_forgets_a_pending_cr() {
    let mut parser = Parser::default();
    assert_eq!(
        parse_with(&mut parser, &[b"data: a\r\r"]).unwrap(),
        [msg("a")]
    );
    parser.end_of_stream();
    // The LF starts the new connection: an empty line, not the tail of a CRLF.
    assert_eq!(
        parse_with(&mut parser, &[b"\ndata: b\n\n"]).unwrap(),
        [msg("b")]
    );
}

#[test]
fn invalid_utf8_is_replaced_per_maximal_subpart() {
    assert_eq!(
        parse(b"data: a\xFFb\xF0\x9F\x98c\xC3\n\n"),
        [msg("a\u{FFFD}b\u{FFFD}c\u{FFFD}")]
    );
    assert_eq!(
        parse(b"event: \xE2\x82\ndata: x\n\n"),
        [ev("", "\u{FFFD}", "x")]
    );
    assert_eq!(
        parse(b"id: \xC0\xAF\ndata: x\n\n"),
        [ev("\u{FFFD}\u{FFFD}", "message", "x")]
    );
}

#[test]
fn multibyte_utf8_split_across_chunks_decodes() {
    let stream = "data: prix 12€ 🚀\n\n".as_bytes();
    for at in 0..stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(parse_chunks(&[a, b]), [msg("prix 12€ 🚀")], "split at {at}");
    }
}

#[test]
fn valid_single_data_line_is_not_copied() {
    let mut parser = Parser::default();
    parser.push(b"data: first\n\ndata: second\n\n");
    let Some(Item::Event(a)) = parser.next_item().unwrap() else {
        panic!("event expected")
    };
    let Some(Item::Event(b)) = parser.next_item().unwrap() else {
        panic!("event expected")
    };
    // Both slices point into the same input buffer, 13 bytes apart (the length of `data: first\n\n`).
    let gap = b.data.as_bytes().as_ptr() as usize - a.data.as_bytes().as_ptr() as usize;
    assert_eq!(gap, 13);
}

fn tight(max_line_bytes: usize, max_event_bytes: usize) -> Parser {
    Parser::new(Limits {
        max_line_bytes,
        max_event_bytes,
    })
}

#[test]
fn line_longer_than_limit_is_an_error() {
    let mut parser = tight(10, 100);
    assert_eq!(
        parse_with(&mut parser, &[b"data: 1234\n\n"]).unwrap(),
        [msg("1234")]
    );
    let err = parse_with(&mut parser, &[b"data: 12345\n"]).unwrap_err();
    assert_eq!(err, ParseError::LineTooLong { limit: 10 });
    assert_eq!(err.kind(), "line_too_long");
}

#[test]
fn unterminated_line_longer_than_limit_is_an_error_before_its_end() {
    let mut parser = tight(10, 100);
    parser.push(b"data: 12345");
    assert_eq!(
        parser.next_item(),
        Err(ParseError::LineTooLong { limit: 10 })
    );
}

#[test]
fn event_data_larger_than_limit_is_an_error() {
    let mut parser = tight(100, 8);
    assert_eq!(
        parse_with(&mut parser, &[b"data: 1234\ndata: 567\n\n"]).unwrap(),
        [msg("1234\n567")]
    );
    let err = parse_with(&mut parser, &[b"data: 1234\ndata: 5678\n\n"]).unwrap_err();
    assert_eq!(err, ParseError::EventTooLarge { limit: 8 });
    assert_eq!(err.kind(), "event_too_large");
    let err = parse_with(&mut tight(100, 8), &[b"data: 123456789\n"]).unwrap_err();
    assert_eq!(err, ParseError::EventTooLarge { limit: 8 });
}

#[test]
fn error_is_final_until_end_of_stream() {
    let mut parser = tight(4, 100).with_last_event_id("3");
    parser.push(b"data: too long\n\ndata: a\n\n");
    assert_eq!(
        parser.next_item(),
        Err(ParseError::LineTooLong { limit: 4 })
    );
    parser.push(b"\n\n");
    assert_eq!(
        parser.next_item(),
        Err(ParseError::LineTooLong { limit: 4 })
    );
    parser.end_of_stream();
    assert_eq!(parser.last_event_id(), "3");
    assert_eq!(
        parse_with(&mut parser, &[b"data\n\n"]).unwrap(),
        [ev("3", "message", "")]
    );
}

#[test]
fn hundred_mib_without_line_end_errors_with_bounded_memory() {
    let limits = Limits::default();
    let mut parser = Parser::new(limits);
    let chunk = vec![b'x'; 64 * 1024];
    let mut fed = 0usize;
    let mut max_capacity = 0usize;
    let mut error = None;
    while fed < 100 * 1024 * 1024 {
        parser.push(&chunk);
        fed += chunk.len();
        max_capacity = max_capacity.max(parser.buffer_capacity());
        if let Err(e) = parser.next_item() {
            error.get_or_insert(e);
        }
    }
    assert_eq!(
        error,
        Some(ParseError::LineTooLong {
            limit: limits.max_line_bytes
        })
    );
    assert!(
        max_capacity <= 2 * (limits.max_line_bytes + chunk.len()),
        "buffer grew to {max_capacity} bytes"
    );
    assert_eq!(parser.buffer_capacity(), 0);
}

#[test]
fn many_fields_without_empty_line_do_not_grow_memory() {
    let mut parser = Parser::default();
    let mut max_capacity = 0usize;
    for n in 0..100_000u32 {
        parser.push(format!("id: {n}\nevent: e{n}\n: c\nfoo: bar\n").as_bytes());
        while let Some(item) = parser.next_item().unwrap() {
            assert!(matches!(item, Item::Comment(_)));
        }
        max_capacity = max_capacity.max(parser.buffer_capacity());
    }
    assert!(max_capacity < 4096, "buffer grew to {max_capacity} bytes");
}

#[test]
fn long_line_across_many_chunks_parses_whole() {
    let value = "0123456789abcdef".repeat(20_000);
    let stream = format!("id: 1\ndata: {value}\r\n\r\n");
    let chunks: Vec<&[u8]> = stream.as_bytes().chunks(1024).collect();
    assert_eq!(parse_chunks(&chunks), [ev("1", "message", &value)]);
}

#[test]
fn line_of_exactly_the_limit_is_accepted() {
    // `data: ` plus 4 bytes is 10 bytes: at the limit, not over it.
    assert_eq!(
        parse_with(&mut tight(10, 4), &[b"data: 1234\r\n\r\n"]).unwrap(),
        [msg("1234")]
    );
    assert_eq!(
        parse_with(&mut tight(10, 4), &[b"data: 1234", b"5\n"]).unwrap_err(),
        ParseError::LineTooLong { limit: 10 }
    );
}

#[test]
fn consumed_input_gives_its_buffer_back() {
    // A stream idle between whole events (one a second, say) must not keep a buffer per
    // connection; the event's data stays valid after the parser let go of the buffer.
    let mut parser = Parser::default();
    parser.push(b"id: 7\ndata: {\"price\":1}\n\n");
    let Some(Item::Event(event)) = parser.next_item().unwrap() else {
        panic!("an event");
    };
    assert_eq!(parser.next_item().unwrap(), None);
    assert_eq!(parser.buffer_capacity(), 0);
    assert_eq!(event.data.as_str(), "{\"price\":1}");
    // A partial line is kept until it completes.
    parser.push(b"data: par");
    assert_eq!(parser.next_item().unwrap(), None);
    assert!(parser.buffer_capacity() > 0);
    parser.push(b"tial\n\n");
    assert_eq!(
        parser.next_item().unwrap(),
        Some(ev("7", "message", "partial"))
    );
    assert_eq!(parser.next_item().unwrap(), None);
    assert_eq!(parser.buffer_capacity(), 0);
}
