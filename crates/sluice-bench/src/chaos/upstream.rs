//! The world outside Sluice in a chaos run: one simulator per target (in this process, so the
//! harness queues faults and reads the truth directly) and the two proxies the targets go
//! through, each demanding a password: tinyproxy (HTTP, BasicAuth) and microsocks (SOCKS5).
//! It must not judge anything; `verify` compares against what it exposes.

use std::time::Duration;

use anyhow::{Context as _, bail};
use sluice_sim::{QueuedFaults, RunningSim, SimConfig};
use sluice_testkit::{Microsocks, MicrosocksOptions, ProxyAuth, Tinyproxy, TinyproxyOptions};

use super::schedule::Fault;
use super::secrets::Secrets;

/// The user name both proxies demand.
pub const PROXY_USER: &str = "chaos";

/// How a target reaches its simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through tinyproxy, `http://chaos@…` plus the password by reference.
    HttpProxy,
    /// Through microsocks, `socks5h://chaos@…` plus the password by reference.
    SocksProxy,
}

/// One target's upstream.
pub struct Upstream {
    /// The target id.
    pub id: String,
    /// Its simulator (its own seed, so targets differ).
    pub sim: RunningSim,
    /// Which proxy carries it.
    pub via: Via,
    /// Faults queued on it so far, by name.
    pub faults: std::collections::BTreeMap<&'static str, u64>,
}

/// The simulators and the proxies.
pub struct World {
    /// One per target, in target order.
    pub upstreams: Vec<Upstream>,
    /// The HTTP proxy.
    pub http_proxy: Tinyproxy,
    /// The SOCKS5 proxy.
    pub socks_proxy: Microsocks,
}

/// The feed every simulator serves.
#[derive(Debug, Clone, Copy)]
pub struct Feed {
    /// Deltas per second per target.
    pub rate: f64,
    /// Deltas per target in the whole run (the feed stops there).
    pub events: u64,
    /// Entities per target.
    pub entities: usize,
}

impl World {
    /// Starts `targets` simulators and both proxies.
    pub async fn start(
        seed: u64,
        targets: usize,
        feed: Feed,
        secrets: &Secrets,
    ) -> anyhow::Result<World> {
        let http_proxy = Tinyproxy::start(TinyproxyOptions {
            auth: Some(ProxyAuth::new(
                PROXY_USER,
                secrets.http_proxy_password.value.clone(),
            )),
            connect_port: None,
        })
        .context("cannot start tinyproxy (apt-get install tinyproxy)")?;
        let socks_proxy = Microsocks::start(MicrosocksOptions {
            auth: Some(ProxyAuth::new(
                PROXY_USER,
                secrets.socks_proxy_password.value.clone(),
            )),
        })
        .context("cannot start microsocks (apt-get install microsocks)")?;
        let mut upstreams = Vec::new();
        for index in 0..targets {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot bind a simulator")?;
            let sim = RunningSim::start(
                SimConfig {
                    seed: seed.wrapping_add(index as u64),
                    entities: feed.entities,
                    rate: feed.rate,
                    heartbeat: Duration::from_secs(1),
                    // Deep enough that a worker down for a whole backoff never falls out of it:
                    // a reset here would be the simulator's limit, not a Sluice loss.
                    history: 1_000_000,
                    retry: None,
                    max_events: Some(feed.events),
                },
                listener,
            )
            .await
            .context("cannot start a simulator")?;
            upstreams.push(Upstream {
                id: format!("c{index:02}"),
                sim,
                via: if index % 2 == 0 {
                    Via::HttpProxy
                } else {
                    Via::SocksProxy
                },
                faults: Default::default(),
            });
        }
        Ok(World {
            upstreams,
            http_proxy,
            socks_proxy,
        })
    }

    /// The proxy URL (user, no password) a target uses.
    pub fn proxy_url(&self, via: Via) -> String {
        match via {
            Via::HttpProxy => format!("http://{PROXY_USER}@127.0.0.1:{}", self.http_proxy.port()),
            Via::SocksProxy => format!(
                "socks5h://{PROXY_USER}@127.0.0.1:{}",
                self.socks_proxy.port()
            ),
        }
    }

    /// Queues `fault` on target `index`'s simulator.
    pub fn inject(&mut self, index: usize, fault: &Fault) -> anyhow::Result<()> {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            bail!("no target number {index}");
        };
        let (count, faults) = fault.to_params();
        upstream
            .sim
            .queue_faults(QueuedFaults { count, faults })
            .map_err(|problems| anyhow::anyhow!("invalid fault {fault:?}: {problems:?}"))?;
        *upstream.faults.entry(fault.name()).or_default() += 1;
        Ok(())
    }

    /// Drops every fault still queued (the end of the chaos phase).
    pub fn clear_faults(&self) {
        for upstream in &self.upstreams {
            upstream.sim.clear_faults();
        }
    }

    /// Waits until every feed has produced its last delta.
    pub async fn wait_for_feeds(&self, events: u64, limit: Duration) -> anyhow::Result<()> {
        for upstream in &self.upstreams {
            tokio::time::timeout(limit, upstream.sim.wait_for_head(events))
                .await
                .with_context(|| {
                    format!(
                        "{}: the simulator's feed did not reach {events}",
                        upstream.id
                    )
                })?;
        }
        Ok(())
    }

    /// Faults queued per kind, over all targets.
    pub fn fault_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut all = std::collections::BTreeMap::new();
        for upstream in &self.upstreams {
            for (name, n) in &upstream.faults {
                *all.entry(*name).or_default() += n;
            }
        }
        all
    }

    /// Stops every simulator (the proxies stop when dropped).
    pub async fn shutdown(self) {
        for upstream in self.upstreams {
            upstream.sim.shutdown().await;
        }
    }
}
