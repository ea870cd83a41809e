//! A bounded retry with exponential backoff for one delivery: a fixed number of attempts, the
//! pause doubling up to a cap, given up early when told to stop. Time comes from tokio's clock
//! (tests run it paused). It must not decide what a failure means.

use std::future::Future;
use std::time::Duration;

/// Attempts and pauses of a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The pause after the first failure.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Backoff {
    /// A delivery's: 4 attempts, 1 s, 2 s, 4 s apart.
    pub const DELIVERY: Backoff = Backoff {
        attempts: 4,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
    };

    /// The pause after failed attempt `n` (1-based).
    pub fn pause(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Runs `attempt(n)` until it succeeds or the attempts run out (the last error returned),
    /// calling `log(n, error, last)` after each failure; `None` when `stop` completes during a
    /// pause.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut attempt: F,
        mut log: impl FnMut(u32, &E, bool),
        stop: impl Future<Output = ()>,
    ) -> Option<Result<T, E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        tokio::pin!(stop);
        let attempts = self.attempts.max(1);
        for n in 1..=attempts {
            // An attempt in flight is finished, not dropped: the blocking write behind it
            // goes on anyway, and the caller's shutdown waits for it.
            match attempt(n).await {
                Ok(value) => return Some(Ok(value)),
                Err(error) => {
                    let last = n == attempts;
                    log(n, &error, last);
                    if last {
                        return Some(Err(error));
                    }
                }
            }
            tokio::select! {
                biased;
                () = &mut stop => return None,
                () = tokio::time::sleep(self.pause(n)) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::cell::RefCell;

    #[test]
    fn pauses_double_up_to_the_cap() {
        let b = Backoff {
            attempts: 9,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let pauses: Vec<u64> = (1..=5).map(|n| b.pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_attempts_with_the_pauses_between_them() {
        let start = tokio::time::Instant::now();
        let times = RefCell::new(Vec::new());
        let logged = RefCell::new(Vec::new());
        let result: Option<Result<(), u32>> = Backoff::DELIVERY
            .run(
                |n| {
                    times.borrow_mut().push(start.elapsed().as_secs());
                    async move { Err(n) }
                },
                |n, _, last| logged.borrow_mut().push((n, last)),
                std::future::pending(),
            )
            .await;
        assert_eq!(result, Some(Err(4)));
        assert_eq!(*times.borrow(), [0, 1, 3, 7]);
        assert_eq!(
            *logged.borrow(),
            [(1, false), (2, false), (3, false), (4, true)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_retrying_when_told_to_stop() {
        let stop = tokio::time::sleep(Duration::from_millis(1500));
        let calls = RefCell::new(0);
        let result: Option<Result<(), ()>> = Backoff::DELIVERY
            .run(
                |_| {
                    *calls.borrow_mut() += 1;
                    async { Err(()) }
                },
                |_, _, _| {},
                stop,
            )
            .await;
        assert_eq!(result, None);
        assert_eq!(
            *calls.borrow(),
            2,
            "attempts at 0 s and 1 s, stopped in the 2 s pause"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_a_failure_is_returned() {
        let result: Option<Result<u32, ()>> = Backoff::DELIVERY
            .run(
                |n| async move { if n < 2 { Err(()) } else { Ok(n) } },
                |_, _, _| {},
                std::future::pending(),
            )
            .await;
        assert_eq!(result, Some(Ok(2)));
    }
}
