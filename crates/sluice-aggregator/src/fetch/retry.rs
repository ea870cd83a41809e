//! When a failed base fetch is tried again: per target, sluice-client's `ExponentialBackoff`
//! (the one backoff: 500 ms doubling up to 30 s, full jitter), reset by a loaded base state.
//! Pure: the caller passes the time and the random source; it reads no clock and fetches
//! nothing.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use sluice_client::ExponentialBackoff;
use tokio::time::Instant;

/// The retries waiting, and each failing target's backoff.
#[derive(Debug, Default)]
pub struct RetrySchedule {
    backoffs: HashMap<String, ExponentialBackoff>,
    /// When, which target, which fetch epoch.
    due: Vec<(Instant, String, u64)>,
}

impl RetrySchedule {
    /// A fetch of `target` (epoch `epoch`) failed at `now`: schedules the next one and returns
    /// the delay.
    pub fn failed<R: Rng + ?Sized>(
        &mut self,
        target: &str,
        epoch: u64,
        now: Instant,
        rng: &mut R,
    ) -> Duration {
        let delay = self
            .backoffs
            .entry(target.to_owned())
            .or_default()
            .next_delay(rng, Duration::ZERO);
        self.due.push((now + delay, target.to_owned(), epoch));
        delay
    }

    /// `target`'s base state loaded: its next failure starts from the initial delay again.
    pub fn succeeded(&mut self, target: &str) {
        self.backoffs.remove(target);
    }

    /// Takes the retries due at `now`: target and epoch.
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, u64)> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.due)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.due = later;
        due.into_iter()
            .map(|(_, target, epoch)| (target, epoch))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_failing_fetch_backs_off_with_jitter_up_to_the_cap_and_a_success_resets_it() {
        let mut schedule = RetrySchedule::default();
        let mut rng = StdRng::seed_from_u64(9);
        let mut now = Instant::now();
        let ceilings = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
        for ceiling in ceilings {
            let delay = schedule.failed("t1", 3, now, &mut rng);
            assert!(
                delay <= Duration::from_millis(ceiling),
                "{delay:?} > {ceiling} ms"
            );
            if delay > Duration::ZERO {
                assert!(schedule.take_due(now).is_empty(), "not before its time");
            }
            now += delay;
            assert_eq!(schedule.take_due(now), [("t1".to_owned(), 3)]);
            assert!(schedule.take_due(now).is_empty(), "due once");
        }
        schedule.succeeded("t1");
        let delay = schedule.failed("t1", 4, now, &mut rng);
        assert!(delay <= Duration::from_millis(500), "reset: {delay:?}");
    }

    #[test]
    fn targets_back_off_independently() {
        let mut schedule = RetrySchedule::default();
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        for _ in 0..6 {
            schedule.failed("slow", 1, now, &mut rng);
        }
        let first = schedule.failed("other", 1, now, &mut rng);
        assert!(first <= Duration::from_millis(500), "{first:?}");
        let due = schedule.take_due(now + Duration::from_secs(30));
        assert_eq!(due.len(), 7, "{due:?}");
    }

    #[test]
    fn delays_are_spread_by_jitter() {
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        let mut delays: Vec<Duration> = (0..50)
            .map(|n| RetrySchedule::default().failed(&format!("t{n}"), 1, now, &mut rng))
            .collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 40, "{} distinct first delays", delays.len());
    }
}
