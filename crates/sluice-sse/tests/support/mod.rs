//! Test support shared by the property tests, the bounded fuzz test and the fuzz example:
//! an independent, obviously-correct reference parser and a differential checker.

pub mod reference;
pub mod soup;

use sluice_sse::{Item, Limits, ParseError, Parser};

/// Everything observable about parsing one connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Items in order, up to the first error.
    pub items: Vec<Item>,
    /// The error that ended the connection, if any.
    pub error: Option<ParseError>,
    /// `Parser::last_event_id` once all bytes were fed.
    pub last_event_id: String,
}

/// Runs the real parser over `stream` cut at the sorted offsets `cuts`.
pub fn run_parser(stream: &[u8], cuts: &[usize], limits: Limits, seed_id: &str) -> Outcome {
    let mut parser = Parser::new(limits).with_last_event_id(seed_id);
    let mut items = Vec::new();
    let mut error = None;
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        let end = end.clamp(start, stream.len());
        parser.push(&stream[start..end]);
        start = end;
        loop {
            match parser.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_some() {
            break;
        }
    }
    let last_event_id = parser.last_event_id().to_owned();
    // Reuse for a next connection: the id survives and a fresh stream parses normally.
    parser.end_of_stream();
    assert_eq!(
        parser.last_event_id(),
        last_event_id,
        "end_of_stream changed the id"
    );
    if limits.max_line_bytes < 7 || limits.max_event_bytes < 1 {
        return Outcome {
            items,
            error,
            last_event_id,
        };
    }
    parser.push(b"data: z\n\n");
    match parser.next_item() {
        Ok(Some(Item::Event(event))) => {
            assert_eq!(
                event.id,
                last_event_id.as_str(),
                "id not carried to next connection"
            );
            assert_eq!(event.data, "z");
        }
        other => panic!("parser not reusable after end_of_stream: {other:?}"),
    }
    Outcome {
        items,
        error,
        last_event_id,
    }
}

/// Checks that `stream` cut at `cuts` parses exactly as the reference does in one piece.
pub fn check(stream: &[u8], cuts: &[usize], limits: Limits, seed_id: &str) -> Result<(), String> {
    let expected = reference::parse(stream, limits, seed_id);
    let got = run_parser(stream, cuts, limits, seed_id);
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "stream {:?} cut at {cuts:?} with {limits:?} seed {seed_id:?}\n  expected {expected:?}\n  got      {got:?}",
            bytes::Bytes::copy_from_slice(stream)
        ))
    }
}
