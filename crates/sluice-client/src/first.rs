//! The first connection to an HTTPS origin through one transport is made alone.
//!
//! Whether an origin speaks HTTP/2 is known only once a TLS handshake has settled ALPN. Until then
//! the connection pool has nothing to share, so every request sent meanwhile opens its own TCP and
//! TLS connection; once one of them turns out to be HTTP/2 the others are thrown away (or, if they
//! finish after it, kept for their single stream). A worker starting many targets on one host
//! would open one connection per target instead of one in all. Holding the others back until the
//! first attempt is answered lets them find its HTTP/2 connection in the pool. Plain `http://`
//! origins (HTTP/1.1 here) gain nothing and are not held back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use url::Url;

/// Per-origin first-attempt gates, shared by every client of one transport.
#[derive(Default)]
pub(crate) struct FirstAttempts {
    origins: Mutex<HashMap<String, Arc<Origin>>>,
}

#[derive(Default)]
struct Origin {
    /// Set when the first attempt finished, whichever way.
    done: AtomicBool,
    /// Held by the first attempt while it runs.
    running: Arc<tokio::sync::Mutex<()>>,
}

/// The first attempt to an origin: while it lives, other attempts to the origin wait.
pub(crate) struct FirstAttempt {
    origin: Arc<Origin>,
    _running: OwnedMutexGuard<()>,
}

impl Drop for FirstAttempt {
    fn drop(&mut self) {
        // Runs before the guard field is released, so whoever gets the lock next sees `done`.
        self.origin.done.store(true, Ordering::Release);
    }
}

impl FirstAttempts {
    /// Waits, at most `wait`, while the first attempt to `url`'s origin runs. Returns the guard
    /// to hold for the attempt when this is the first one, `None` when the caller may just go.
    pub(crate) async fn enter(&self, url: &Url, wait: Duration) -> Option<FirstAttempt> {
        if url.scheme() != "https" {
            return None;
        }
        let origin = {
            let mut origins = match self.origins.lock() {
                Ok(origins) => origins,
                Err(poisoned) => poisoned.into_inner(),
            };
            origins
                .entry(url.origin().ascii_serialization())
                .or_default()
                .clone()
        };
        if origin.done.load(Ordering::Acquire) {
            return None;
        }
        // A first attempt slower than a connect timeout is not worth waiting for any longer.
        let running = tokio::time::timeout(wait, origin.running.clone().lock_owned())
            .await
            .ok()?;
        if origin.done.load(Ordering::Acquire) {
            return None;
        }
        Some(FirstAttempt {
            origin,
            _running: running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("valid url")
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn others_wait_for_the_first_attempt_to_an_https_origin_and_then_go_freely() {
        let gates = FirstAttempts::default();
        let first = gates.enter(&url("https://h.example/a"), LONG).await;
        assert!(first.is_some(), "the first attempt goes alone");

        let same_origin = url("https://h.example:443/b?x=1");
        let mut second = Box::pin(gates.enter(&same_origin, LONG));
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "same origin: waits for the first attempt"
        );
        let elsewhere = gates.enter(&url("https://other.example/a"), LONG).await;
        assert!(
            elsewhere.is_some(),
            "another origin has its own first attempt"
        );
        assert!(
            gates
                .enter(&url("http://h.example/a"), LONG)
                .await
                .is_none(),
            "plain http is never held back"
        );

        drop(first);
        assert!(
            second.await.is_none(),
            "after the first attempt, nobody waits"
        );
        assert!(
            gates
                .enter(&url("https://h.example/c"), LONG)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_slow_first_attempt_holds_the_others_back_only_for_the_wait_limit() {
        let gates = FirstAttempts::default();
        let _first = gates.enter(&url("https://h.example/"), LONG).await;
        let waited = gates
            .enter(&url("https://h.example/"), Duration::from_millis(10))
            .await;
        assert!(
            waited.is_none(),
            "gave up waiting and goes without the gate"
        );
    }
}
