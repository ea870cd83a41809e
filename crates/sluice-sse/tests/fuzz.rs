//! A bounded run of the stable fuzz harness (the long run is `examples/fuzz.rs`): random SSE-ish
//! byte soups in random chunkings must never panic and must parse exactly as the naive reference
//! parser does in one piece.

mod support;

#[test]
fn random_soups_in_random_chunks_match_the_reference() {
    for seed in 0..4 {
        if let Err(mismatch) = support::soup::run(seed, 5_000, 300) {
            panic!("seed {seed}: {mismatch}");
        }
    }
}
