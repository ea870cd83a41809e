//! Seeded byte soups biased towards SSE tokens, random chunkings and limits, for fuzzing on
//! stable Rust.

use sluice_sse::Limits;

/// SplitMix64: a tiny, fast, seedable PRNG (statistical quality is plenty for fuzzing).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const TOKENS: &[&[u8]] = &[
    b"data",
    b"data:",
    b"data: ",
    b"data:  ",
    b"id:",
    b"id: ",
    b"id",
    b"event:",
    b"event: ",
    b"retry:",
    b"retry: ",
    b"retry",
    b":",
    b": ",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\r\r",
    b"\r\n\r\n",
    b"\xEF\xBB\xBF",
    b"\xEF\xBB",
    b"\xEF",
    b"\0",
    b"0",
    b"7",
    b"1500",
    b"18446744073709551616",
    b"x",
    b"hello",
    b"{\"p\":1.5}",
    "€".as_bytes(),
    "🚀".as_bytes(),
    "é".as_bytes(),
    b"\xFF",
    b"\xC3",
    b"\xF0\x9F",
    b"\xE2\x82",
    b"\x80",
    b"Data:",
    b"foo:",
];

/// A random stream of `0..max_len`-ish bytes, mostly SSE tokens.
pub fn stream(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let target = rng.below(max_len + 1);
    let mut out = Vec::with_capacity(target + 32);
    if rng.one_in(4) {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    while out.len() < target {
        match rng.below(10) {
            0 => out.push(rng.next_u64() as u8),
            1 => {
                let n = rng.below(40);
                out.extend((0..n).map(|_| b'a' + rng.below(26) as u8));
            }
            2 => out.extend_from_slice(b"\n\n"),
            _ => out.extend_from_slice(TOKENS[rng.below(TOKENS.len())]),
        }
    }
    out
}

/// Sorted cut offsets: none, every byte, or a random handful.
pub fn cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    match rng.below(8) {
        0 => Vec::new(),
        1 => (1..len).collect(),
        _ => {
            let mut cuts: Vec<usize> = (0..rng.below(12)).map(|_| rng.below(len + 1)).collect();
            cuts.sort_unstable();
            cuts
        }
    }
}

/// Default limits half the time, tight ones otherwise so the error paths get exercised.
pub fn limits(rng: &mut Rng) -> Limits {
    if rng.one_in(2) {
        Limits::default()
    } else {
        Limits {
            max_line_bytes: rng.below(64),
            max_event_bytes: rng.below(128),
        }
    }
}

/// A seed id, usually empty.
pub fn seed_id(rng: &mut Rng) -> &'static str {
    ["", "", "", "41", "é"][rng.below(5)]
}

/// Runs `iterations` random cases from `seed`; returns the first mismatch.
pub fn run(seed: u64, iterations: u64, max_len: usize) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    for _ in 0..iterations {
        let stream = stream(&mut rng, max_len);
        let cuts = cuts(&mut rng, stream.len());
        let limits = limits(&mut rng);
        let seed_id = seed_id(&mut rng);
        super::check(&stream, &cuts, limits, seed_id)?;
    }
    Ok(())
}
