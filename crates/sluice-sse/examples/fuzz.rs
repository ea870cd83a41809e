//! Stable-Rust fuzzing of the SSE parser: seeded byte soups biased towards SSE tokens, fed in
//! random chunkings with default and tight limits, must never panic and must parse exactly as the
//! naive reference parser does in one piece.
//!
//! `cargo run -p sluice-sse --release --example fuzz -- --seconds 30 [--seed N] [--max-len N]`

// This is a plain CLI harness, not tokio code: the wall clock only bounds the run.
#![allow(clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    seconds: u64,
    seed: u64,
    max_len: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 10,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        max_len: 512,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        let number = value
            .parse::<u64>()
            .map_err(|e| format!("bad value for {flag}: {e}"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = number,
            "--seed" => args.seed = number,
            "--max-len" => args.max_len = number as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("usage: fuzz [--seconds N] [--seed N] [--max-len N]");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut cases = 0u64;
    let mut batch_seed = args.seed;
    const BATCH: u64 = 1_000;
    // At least one batch, so `--seconds 0` replays exactly one seed.
    loop {
        let seed = batch_seed;
        let outcome = std::panic::catch_unwind(|| support::soup::run(seed, BATCH, args.max_len));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(mismatch)) => {
                eprintln!("mismatch in batch seed {seed}: {mismatch}");
                return ExitCode::FAILURE;
            }
            Err(_) => {
                eprintln!("panic in batch seed {seed} (rerun with --seed {seed} --seconds 0)");
                return ExitCode::FAILURE;
            }
        }
        cases += BATCH;
        batch_seed = batch_seed.wrapping_add(1);
        if Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ok: {cases} cases from seed {} in {elapsed:.1}s ({:.0} cases/s), no panic, no mismatch",
        args.seed,
        cases as f64 / elapsed
    );
    ExitCode::SUCCESS
}
