//! The reconnect rules, once for both loops: jitter bounds, the `retry:` and `Retry-After`
//! floors and their cap, the failed-attempt floor, the reset after a healthy stream (under
//! tokio's paused clock), and which failures stop or are retried.

use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::advance;

const INITIAL: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);
const RESET_AFTER: Duration = Duration::from_secs(30);

fn options(on_hard_failure: HardFailure) -> ReconnectOptions {
    ReconnectOptions {
        backoff: ExponentialBackoff::try_new(INITIAL, MAX, RESET_AFTER).expect("valid backoff"),
        reconnection_time: Duration::ZERO,
        failed_attempt_floor: Duration::ZERO,
        on_hard_failure,
    }
}

fn policy(on_hard_failure: HardFailure) -> ReconnectPolicy {
    ReconnectPolicy::new(options(on_hard_failure))
}

fn transport() -> ConnectError {
    ConnectError::Transport {
        url: "http://upstream.test/stream".to_owned(),
        detail: "connection refused".to_owned(),
    }
}

fn status(status: u16, retry_after: Option<Duration>) -> ConnectError {
    ConnectError::Status {
        status,
        retry_after,
    }
}

#[track_caller]
fn delay(decision: Decision) -> Duration {
    match decision {
        Decision::Retry(delay) => delay,
        Decision::Stop => panic!("expected a retry, got a stop"),
    }
}

/// The delay after one failure of `error`, on a fresh policy.
fn after(error: &ConnectError, on_hard_failure: HardFailure, seed: u64) -> Decision {
    let mut rng = StdRng::seed_from_u64(seed);
    policy(on_hard_failure).decide(Outcome::Failed(error), Instant::now(), &mut rng)
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_wait_a_full_jitter_delay_under_a_doubling_ceiling() {
    let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
    let mut fourth = Vec::new();
    for seed in 0..200 {
        let mut p = policy(HardFailure::Stop);
        let mut rng = StdRng::seed_from_u64(seed);
        for (n, ceiling) in ceilings.iter().enumerate() {
            let d = delay(p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng));
            assert!(d <= Duration::from_millis(*ceiling), "attempt {n}: {d:?}");
            if n == 3 {
                fourth.push(d);
            }
        }
    }
    fourth.sort();
    fourth.dedup();
    assert!(fourth.len() > 150, "spread: {} distinct", fourth.len());
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_delays() {
    let run = |seed| {
        let mut p = policy(HardFailure::Stop);
        let mut rng = StdRng::seed_from_u64(seed);
        (0..8)
            .map(|_| delay(p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng)))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[tokio::test(start_paused = true)]
async fn a_retry_field_is_the_floor_of_every_delay_and_counts_at_most_an_hour() {
    let mut p = policy(HardFailure::Stop);
    let mut rng = StdRng::seed_from_u64(1);
    p.retry_field(3_000);
    assert_eq!(p.reconnection_time(), Duration::from_secs(3));
    for _ in 0..3 {
        p.opened(Instant::now());
        p.dispatched();
        let d = delay(p.decide(Outcome::Ended, Instant::now(), &mut rng));
        // The jitter ceiling (at most 400 ms here) is under the floor: exactly the floor.
        assert_eq!(d, Duration::from_secs(3));
    }
    let d = delay(p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng));
    assert!(d >= Duration::from_secs(3), "{d:?}");

    p.retry_field(u64::MAX);
    assert_eq!(p.reconnection_time(), MAX_SERVER_DELAY);
    p.opened(Instant::now());
    p.dispatched();
    assert_eq!(
        p.decide(Outcome::Ended, Instant::now(), &mut rng),
        Decision::Retry(MAX_SERVER_DELAY)
    );

    let mut p = ReconnectPolicy::new(ReconnectOptions {
        reconnection_time: Duration::from_secs(86_400),
        ..options(HardFailure::Stop)
    });
    assert_eq!(
        p.reconnection_time(),
        MAX_SERVER_DELAY,
        "the initial one too"
    );
    p.retry_field(0);
    assert_eq!(p.reconnection_time(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_and_counts_at_most_an_hour() {
    for code in [429, 503] {
        let seven = status(code, Some(Duration::from_secs(7)));
        for seed in 0..20 {
            assert_eq!(
                after(&seven, HardFailure::Stop, seed),
                Decision::Retry(Duration::from_secs(7))
            );
        }
    }
    // However the error was made, a server cannot park the client for years.
    let years = status(503, Some(Duration::from_secs(10 * 365 * 86_400)));
    assert_eq!(
        after(&years, HardFailure::Stop, 0),
        Decision::Retry(MAX_SERVER_DELAY)
    );
    // The larger of `Retry-After` and the reconnection time wins.
    let mut p = policy(HardFailure::Stop);
    let mut rng = StdRng::seed_from_u64(2);
    p.retry_field(9_000);
    let d = delay(p.decide(
        Outcome::Failed(&status(503, Some(Duration::from_secs(2)))),
        Instant::now(),
        &mut rng,
    ));
    assert_eq!(d, Duration::from_secs(9));
    // A hard failure retried slowly still honours its `Retry-After`.
    let long = status(404, Some(Duration::from_secs(600)));
    assert_eq!(
        after(&long, HardFailure::RetrySlowly, 0),
        Decision::Retry(Duration::from_secs(600))
    );
}

#[tokio::test(start_paused = true)]
async fn the_failed_attempt_floor_holds_unless_the_stream_dispatched_an_event() {
    let floored = || {
        ReconnectPolicy::new(ReconnectOptions {
            failed_attempt_floor: FAILED_ATTEMPT_FLOOR,
            ..options(HardFailure::Stop)
        })
    };
    let mut rng = StdRng::seed_from_u64(3);
    // No stream at all.
    let mut p = floored();
    p.retry_field(0);
    let d = delay(p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng));
    assert!(d >= FAILED_ATTEMPT_FLOOR, "{d:?}");
    // A stream that opened (`retry: 0`) and ended before any event.
    let mut p = floored();
    p.opened(Instant::now());
    p.retry_field(0);
    let d = delay(p.decide(Outcome::Ended, Instant::now(), &mut rng));
    assert!(d >= FAILED_ATTEMPT_FLOOR, "{d:?}");
    // A stream that dispatched an event: only the jitter, under the initial ceiling.
    for seed in 0..50 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = floored();
        p.opened(Instant::now());
        p.dispatched();
        let d = delay(p.decide(Outcome::Ended, Instant::now(), &mut rng));
        assert!(d <= INITIAL, "{d:?}");
    }
    // An event before `opened` belongs to no stream.
    let mut p = floored();
    p.dispatched();
    p.opened(Instant::now());
    let d = delay(p.decide(Outcome::Ended, Instant::now(), &mut rng));
    assert!(d >= FAILED_ATTEMPT_FLOOR, "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_open_for_reset_after_starts_the_backoff_over_and_a_shorter_one_does_not() {
    let mut p = policy(HardFailure::Stop);
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..5 {
        p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng);
    }
    assert_eq!(p.backoff.attempt(), 5);

    p.opened(Instant::now());
    p.dispatched();
    advance(RESET_AFTER - Duration::from_millis(1)).await;
    p.decide(Outcome::Ended, Instant::now(), &mut rng);
    assert_eq!(p.backoff.attempt(), 6, "just short of healthy: counted on");

    p.opened(Instant::now());
    advance(RESET_AFTER).await;
    // Healthy, even without an event (heartbeats only): the ceiling is the initial one again.
    let d = delay(p.decide(Outcome::Ended, Instant::now(), &mut rng));
    assert!(d <= INITIAL, "{d:?}");
    assert_eq!(p.backoff.attempt(), 1);

    // Time with no stream open resets nothing.
    for _ in 0..3 {
        p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng);
    }
    advance(RESET_AFTER * 2).await;
    p.decide(Outcome::Failed(&transport()), Instant::now(), &mut rng);
    assert_eq!(p.backoff.attempt(), 5);
}

#[tokio::test(start_paused = true)]
async fn statuses_retrying_may_fix_are_retried_and_the_others_are_hard() {
    for code in [408, 425, 429, 500, 502, 503, 504, 599] {
        let d = delay(after(&status(code, None), HardFailure::Stop, 0));
        assert!(d <= INITIAL, "{code}: {d:?}");
    }
    for code in [300, 400, 401, 403, 404, 405, 410, 418, 451, 600] {
        assert_eq!(
            after(&status(code, None), HardFailure::Stop, 0),
            Decision::Stop,
            "{code}"
        );
        for seed in 0..20 {
            let d = delay(after(&status(code, None), HardFailure::RetrySlowly, seed));
            assert!(d >= MAX / 2 && d <= MAX, "{code}: {d:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_content_and_unusable_options_stop_even_a_daemon() {
    for hard in [HardFailure::Stop, HardFailure::RetrySlowly] {
        assert_eq!(after(&ConnectError::NoContent, hard, 0), Decision::Stop);
        let options = ConnectError::Options("unsupported proxy scheme".to_owned());
        assert_eq!(after(&options, hard, 0), Decision::Stop);
    }
}

#[tokio::test(start_paused = true)]
async fn every_other_failure_is_retried_or_hard_by_its_kind() {
    let redirects = ConnectError::TooManyRedirects {
        url: "http://upstream.test/".to_owned(),
        limit: 5,
    };
    for soft in [transport(), redirects] {
        let d = delay(after(&soft, HardFailure::Stop, 0));
        assert!(d <= INITIAL, "{soft}: {d:?}");
    }
    let content_type = ConnectError::ContentType {
        found: "text/html".to_owned(),
    };
    let redirect = ConnectError::Redirect {
        url: "https://upstream.test/".to_owned(),
        detail: "to plain http".to_owned(),
    };
    for hard in [content_type, redirect] {
        assert_eq!(after(&hard, HardFailure::Stop, 0), Decision::Stop, "{hard}");
        let d = delay(after(&hard, HardFailure::RetrySlowly, 0));
        assert!(d >= MAX / 2, "{hard}: {d:?}");
    }

    let mut rng = StdRng::seed_from_u64(5);
    let mut p = policy(HardFailure::Stop);
    p.opened(Instant::now());
    assert_eq!(
        p.decide(Outcome::Rejected, Instant::now(), &mut rng),
        Decision::Stop
    );
    assert_eq!(
        p.decide(Outcome::NotMade { hard: true }, Instant::now(), &mut rng),
        Decision::Stop
    );
    let d = delay(p.decide(Outcome::NotMade { hard: false }, Instant::now(), &mut rng));
    assert!(d <= INITIAL, "{d:?}");

    let mut p = policy(HardFailure::RetrySlowly);
    p.opened(Instant::now());
    let d = delay(p.decide(Outcome::Rejected, Instant::now(), &mut rng));
    assert!(d >= MAX / 2 && d <= MAX, "{d:?}");
    let d = delay(p.decide(Outcome::NotMade { hard: true }, Instant::now(), &mut rng));
    assert!(d >= MAX / 2 && d <= MAX, "{d:?}");
}
