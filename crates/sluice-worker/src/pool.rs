//! Shared connection resources: HTTP transports (one per proxy and timeout set, so thousands of
//! targets behind one proxy share a client and HTTP/2 connections), proxy pools with resting of
//! failing proxies, and the per-host connection cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::{Client, ClientOptions, ConnectError, redact::redact_url};
use sluice_config::{ProxyConfig, TargetConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

/// Consecutive transport failures after which a pool proxy is rested.
const REST_AFTER_FAILURES: u32 = 3;
/// How long a failing proxy is left alone.
const REST_FOR: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TransportKey {
    /// The resolved proxy URL, password included: kept only as a map key, never shown.
    proxy: Option<String>,
    connect_timeout: Duration,
    max_redirects: u32,
    roots: Vec<Vec<u8>>,
    compression: bool,
    /// The client certificate and key as read for this attempt: a rotated one makes a new
    /// transport (new connections present it). Kept only as a map key, never shown.
    identity: Option<Vec<u8>>,
    /// Which of the host's HTTP/2 connections ([`crate::lanes`]).
    lane: usize,
}

/// One HTTP client per distinct (proxy, connect timeout, redirect limit, TLS roots, compression,
/// client certificate).
#[derive(Default)]
pub struct Transports {
    clients: Mutex<HashMap<TransportKey, Arc<Mutex<Option<Client>>>>>,
}

impl Transports {
    /// A client for `target` through `proxy` (resolved, password included) with `headers`,
    /// presenting `identity` (its client certificate and key, read for this attempt), on the
    /// host's connection `lane`.
    pub fn client(
        &self,
        target: &TargetConfig,
        proxy: Option<Url>,
        headers: http::HeaderMap,
        identity: Option<Vec<u8>>,
        lane: usize,
    ) -> Result<Client, ConnectError> {
        let key = TransportKey {
            proxy: proxy.as_ref().map(|u| u.to_string()),
            connect_timeout: target.connect_timeout,
            max_redirects: target.max_redirects,
            roots: target.root_certificates_pem.clone(),
            compression: target.compression,
            identity: identity.clone(),
            lane,
        };
        // One slot per transport, built under the slot's lock: targets starting together must not
        // each build (and keep) a transport of their own, or they could not share a connection.
        let slot = lock(&self.clients).entry(key).or_default().clone();
        let base = {
            let mut slot = lock(&slot);
            match &*slot {
                Some(client) => client.clone(),
                None => {
                    let options = ClientOptions {
                        proxy,
                        connect_timeout: target.connect_timeout,
                        max_redirects: usize::try_from(target.max_redirects).unwrap_or(usize::MAX),
                        root_certificates_pem: target.root_certificates_pem.clone(),
                        compression: target.compression,
                        identity_pem: identity,
                        ..ClientOptions::default()
                    };
                    let client = Client::new(target.url.clone(), options)?;
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        base.retarget(target.url.clone(), headers)
    }
}

struct Member {
    config: ProxyConfig,
    shown: String,
    failures: AtomicU32,
    /// Milliseconds since the pool's origin until which this proxy rests; 0 = not resting.
    rested_until_ms: AtomicU64,
}

/// A named pool of static proxies that targets spread over.
pub struct ProxyPool {
    name: String,
    origin: Instant,
    members: Vec<Member>,
}

impl ProxyPool {
    /// A pool of `proxies` (validation guarantees it is not empty).
    pub fn new(name: &str, proxies: &[ProxyConfig]) -> ProxyPool {
        ProxyPool {
            name: name.to_owned(),
            origin: Instant::now(),
            members: proxies
                .iter()
                .map(|p| Member {
                    shown: redact_url(&p.url),
                    config: p.clone(),
                    failures: AtomicU32::new(0),
                    rested_until_ms: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Where a target starts in the pool: [`sluice_publish::pool_home`], the member its
    /// aggregator's base-state fetch uses too.
    pub fn home(&self, target: &str) -> usize {
        sluice_publish::pool_home(target, self.members.len())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The proxy to use from `cursor` on: the first that is not resting; when all rest, the one
    /// whose rest ends first. Returns its index.
    pub fn pick(&self, cursor: usize) -> usize {
        let n = self.members.len().max(1);
        let now = self.now_ms();
        let mut best = (u64::MAX, cursor % n);
        for step in 0..n {
            let index = (cursor + step) % n;
            let Some(member) = self.members.get(index) else {
                continue;
            };
            let until = member.rested_until_ms.load(Ordering::Relaxed);
            if until <= now {
                return index;
            }
            if until < best.0 {
                best = (until, index);
            }
        }
        best.1
    }

    /// The proxy at `index`: its config and redacted URL.
    pub fn member(&self, index: usize) -> Option<(&ProxyConfig, &str)> {
        self.members
            .get(index)
            .map(|m| (&m.config, m.shown.as_str()))
    }

    /// Reports the outcome of a connection attempt through proxy `index`.
    pub fn report(&self, index: usize, ok: bool) {
        let Some(member) = self.members.get(index) else {
            return;
        };
        if ok {
            member.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = member.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= REST_AFTER_FAILURES {
            member.failures.store(0, Ordering::Relaxed);
            let until = self.now_ms() + u64::try_from(REST_FOR.as_millis()).unwrap_or(0);
            member.rested_until_ms.store(until, Ordering::Relaxed);
            tracing::warn!(
                pool = %self.name,
                proxy = %member.shown,
                failures,
                rest_seconds = REST_FOR.as_secs(),
                "proxy keeps failing; resting it"
            );
        }
    }
}

/// At most `cap` concurrent connections to one upstream host (`host:port`), across targets.
pub struct HostLimits {
    cap: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimits {
    /// A limiter with `cap` connections per host (at least 1).
    pub fn new(cap: u32) -> HostLimits {
        HostLimits {
            cap: usize::try_from(cap.max(1)).unwrap_or(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, url: &Url) -> Arc<Semaphore> {
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        lock(&self.hosts)
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
            .clone()
    }

    /// Waits for a connection slot to `url`'s host.
    pub async fn acquire(&self, url: &Url) -> Option<OwnedSemaphorePermit> {
        self.semaphore(url).acquire_owned().await.ok()
    }

    /// A second slot for a make-before-break switch, only if one is free now.
    pub fn try_acquire(&self, url: &Url) -> Option<OwnedSemaphorePermit> {
        self.semaphore(url).try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> ProxyPool {
        let proxies: Vec<ProxyConfig> = (0..n)
            .map(|i| ProxyConfig {
                url: Url::parse(&format!("http://127.0.0.1:{}", 3000 + i)).expect("valid url"),
                password: None,
            })
            .collect();
        ProxyPool::new("p", &proxies)
    }

    #[test]
    fn targets_spread_over_the_pool() {
        let pool = pool(4);
        let mut used = [0usize; 4];
        for i in 0..400 {
            used[pool.home(&format!("target-{i}"))] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }

    #[test]
    fn a_proxy_that_keeps_failing_is_rested_and_skipped() {
        let pool = pool(3);
        assert_eq!(pool.pick(1), 1);
        for _ in 0..REST_AFTER_FAILURES {
            pool.report(1, false);
        }
        assert_eq!(pool.pick(1), 2, "the rested proxy is skipped");
        pool.report(2, false);
        pool.report(2, true);
        pool.report(2, false);
        assert_eq!(pool.pick(2), 2, "a success resets the failure count");
    }

    #[test]
    fn when_every_proxy_rests_the_one_resting_least_is_used() {
        let pool = pool(2);
        for index in [0, 1] {
            for _ in 0..REST_AFTER_FAILURES {
                pool.report(index, false);
            }
        }
        let picked = pool.pick(0);
        assert!(picked < 2);
    }

    #[tokio::test]
    async fn the_host_cap_is_shared_by_every_target_of_a_host() {
        let limits = HostLimits::new(1);
        let a = Url::parse("http://h.example:80/a").expect("valid url");
        let b = Url::parse("http://h.example/b").expect("valid url");
        let held = limits.acquire(&a).await;
        assert!(held.is_some());
        assert!(limits.try_acquire(&b).is_none(), "same host:port, cap 1");
        drop(held);
        assert!(limits.try_acquire(&b).is_some());
    }
}
