//! Availability of the aggregator during a chaos run: polls its `GET /v1/targets` every
//! `interval` and measures, per target, the longest stretch in which it served no state for
//! that target (from the last poll that saw it served to the next one), once it had served it
//! a first time. A refused connection (the aggregator is being restarted) serves nothing.
//! It only observes; it must not talk to anything but the aggregator's HTTP API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Availability {
    /// Per target, its longest stretch without state.
    pub longest: BTreeMap<String, Duration>,
    /// Polls made, and polls that got an answer.
    pub polls: u64,
    /// Polls the aggregator answered.
    pub answered: u64,
}

impl Availability {
    /// The longest stretch any target went unserved.
    pub fn worst(&self) -> Duration {
        self.longest.values().copied().max().unwrap_or_default()
    }
}

/// Per-target bookkeeping, pure so it is tested without a server.
#[derive(Debug, Default)]
pub struct Tracker {
    last_served: BTreeMap<String, Instant>,
    longest: BTreeMap<String, Duration>,
}

impl Tracker {
    /// Records one poll at `now` that saw `served` targets with state (`targets` = all).
    pub fn poll(&mut self, now: Instant, targets: &[String], served: &[String]) {
        for target in targets {
            let is_served = served.contains(target);
            if let Some(last) = self.last_served.get(target).copied() {
                // A stretch still open counts as far as it got (the run may end inside it).
                let gap = now.saturating_duration_since(last);
                let longest = self.longest.entry(target.clone()).or_default();
                *longest = (*longest).max(gap);
            }
            if is_served {
                self.last_served.insert(target.clone(), now);
                self.longest.entry(target.clone()).or_default();
            }
        }
    }

    fn longest(&self) -> BTreeMap<String, Duration> {
        self.longest.clone()
    }
}

/// The running probe.
pub struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Availability>,
}

impl Probe {
    /// Starts polling `base` (`http://IP:PORT`) for `targets`.
    pub fn start(base: String, targets: Vec<String>, interval: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest012::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .unwrap_or_default();
            let mut tracker = Tracker::default();
            let mut out = Availability::default();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                out.polls += 1;
                let served = match served(&client, &base).await {
                    Some(served) => {
                        out.answered += 1;
                        served
                    }
                    None => Vec::new(),
                };
                tracker.poll(Instant::now(), &targets, &served);
            }
            out.longest = tracker.longest();
            out
        });
        Probe { stop, task }
    }

    /// Stops after the current poll and returns what it saw.
    pub async fn finish(self) -> Availability {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The targets `GET /v1/targets` lists with state, or `None` when it does not answer.
async fn served(client: &reqwest012::Client, base: &str) -> Option<Vec<String>> {
    let response = client.get(format!("{base}/v1/targets")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
    Some(
        body["targets"]
            .as_array()?
            .iter()
            .filter(|t| t["has_state"] == true)
            .filter_map(|t| t["target"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_unserved_stretch_starts_after_the_first_serve_and_counts_open_ones() {
        let targets = vec!["a".to_owned(), "b".to_owned()];
        let both = targets.clone();
        let only_a = vec!["a".to_owned()];
        let mut t = Tracker::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // Nothing served for 30 s at start-up: not counted (no first serve yet).
        t.poll(at(0), &targets, &[]);
        t.poll(at(30), &targets, &both);
        // a: down from 31 to 43 (12 s since it was last seen at 31).
        t.poll(at(31), &targets, &both);
        t.poll(at(35), &targets, &[]);
        t.poll(at(43), &targets, &both);
        // b: unserved from 43 to the end at 50 (7 s, still open).
        t.poll(at(50), &targets, &only_a);
        let longest = t.longest();
        assert_eq!(longest["a"], Duration::from_secs(12));
        assert_eq!(longest["b"], Duration::from_secs(12));
        t.poll(at(70), &targets, &only_a);
        assert_eq!(t.longest()["b"], Duration::from_secs(27));
    }
}
