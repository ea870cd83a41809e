//! Property tests: streams built from a grammar of realistic SSE lines parse to exactly the same
//! items whatever the chunking, and exactly as the naive reference parser does.

// The seeded soup generators are used by the fuzz test and example, not here.
#[allow(dead_code)]
mod support;

use proptest::prelude::*;
use sluice_sse::Limits;

fn field_name() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        6 => Just(&b"data"[..]),
        2 => Just(&b"id"[..]),
        2 => Just(&b"event"[..]),
        2 => Just(&b"retry"[..]),
        1 => Just(&b"foo"[..]),
        1 => Just(&b"Data"[..]),
        1 => Just(&b"\xEF\xBB\xBFdata"[..]),
    ]
}

fn separator() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        4 => Just(&b": "[..]),
        2 => Just(&b":"[..]),
        1 => Just(&b":  "[..]),
        1 => Just(&b""[..]),
    ]
}

fn value_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9 {}\":,.]{0,12}".prop_map(String::into_bytes),
        2 => "[0-9]{1,22}".prop_map(String::into_bytes),
        2 => "[é€🚀ü日本]{1,4}".prop_map(String::into_bytes),
        1 => prop_oneof![
            Just(b"\xFF".to_vec()),
            Just(b"\xC3".to_vec()),
            Just(b"\xF0\x9F\x98".to_vec()),
            Just(b"\xE2\x82".to_vec()),
            Just(b"\x80\x80".to_vec()),
            Just(b"\xED\xA0\x80".to_vec()),
        ],
        1 => Just(b"\0".to_vec()),
        1 => Just(b":".to_vec()),
        1 => Just(b"-1".to_vec()),
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        field_name(),
        separator(),
        prop::collection::vec(value_piece(), 0..4),
    )
        .prop_map(|(name, sep, pieces)| {
            let mut line = name.to_vec();
            line.extend_from_slice(sep);
            pieces.iter().for_each(|p| line.extend_from_slice(p));
            line
        });
    prop_oneof![
        8 => field,
        3 => Just(Vec::new()),
        1 => "[ a-z]{0,10}".prop_map(|c| format!(":{c}").into_bytes()),
    ]
}

fn terminator() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![4 => Just(&b"\n"[..]), 2 => Just(&b"\r\n"[..]), 2 => Just(&b"\r"[..])]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        6 => Just(&b""[..]),
        2 => Just(&b"\xEF\xBB\xBF"[..]),
        1 => Just(&b"\xEF\xBB\xBF\xEF\xBB\xBF"[..]),
        1 => Just(&b"\xEF\xBB"[..]),
    ];
    let tail = prop_oneof![3 => Just(Vec::new()), 1 => line()];
    (
        prefix,
        prop::collection::vec((line(), terminator()), 0..24),
        tail,
    )
        .prop_map(|(prefix, lines, tail)| {
            let mut out = prefix.to_vec();
            for (line, end) in lines {
                out.extend_from_slice(&line);
                out.extend_from_slice(end);
            }
            out.extend_from_slice(&tail);
            out
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::default()),
        1 => (0usize..40, 0usize..60)
            .prop_map(|(max_line_bytes, max_event_bytes)| Limits { max_line_bytes, max_event_bytes }),
    ]
}

fn seed_id() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(""), 1 => Just("41")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_shot_parse_matches_the_reference(stream in stream(), limits in limits(), seed in seed_id()) {
        support::check(&stream, &[], limits, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn every_two_chunk_split_parses_like_one_shot(stream in stream(), limits in limits(), seed in seed_id()) {
        for at in 0..=stream.len() {
            support::check(&stream, &[at], limits, seed).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn random_chunkings_parse_like_one_shot(
        stream in stream(),
        mut cuts in prop::collection::vec(0usize..400, 0..16),
        limits in limits(),
        seed in seed_id(),
    ) {
        cuts.iter_mut().for_each(|c| *c = (*c).min(stream.len()));
        cuts.sort_unstable();
        support::check(&stream, &cuts, limits, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn byte_by_byte_parses_like_one_shot(stream in stream(), limits in limits()) {
        let cuts: Vec<usize> = (1..stream.len()).collect();
        support::check(&stream, &cuts, limits, "").map_err(TestCaseError::fail)?;
    }
}
