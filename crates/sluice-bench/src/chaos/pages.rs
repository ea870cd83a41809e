//! The HTTP pages of the Sluice processes, searched for secrets: a worker's `/metrics`,
//! `/status` and `/status.html`, the aggregator's `/metrics`, `/v1/targets` and target states.
//! Looked at before every kill and at the end. A page that does not answer is skipped (the
//! process may be between lives); it must not judge anything but secrets.

use super::secrets::{Findings, Secrets};

/// A worker's pages.
const WORKER: &[&str] = &["/metrics", "/status", "/status.html"];
/// The aggregator's pages (its target states are added at the end).
const AGGREGATOR: &[&str] = &["/metrics", "/v1/targets"];

/// The searcher and what it found.
pub struct Pages {
    http: reqwest012::Client,
    secrets: Secrets,
    /// Secrets found in pages.
    pub findings: Findings,
}

impl Pages {
    /// A searcher for `secrets`.
    pub fn new(http: reqwest012::Client, secrets: Secrets) -> Pages {
        Pages {
            http,
            secrets,
            findings: Findings::default(),
        }
    }

    /// A worker's pages at `base`.
    pub async fn worker(&mut self, base: &str) {
        self.look(base, WORKER).await;
    }

    /// The aggregator's pages at `base`, with the states of `targets`.
    pub async fn aggregator(&mut self, base: &str, targets: &[String]) {
        self.look(base, AGGREGATOR).await;
        for id in targets {
            self.look(base, &[&format!("/v1/targets/{id}/state")]).await;
        }
    }

    async fn look(&mut self, base: &str, paths: &[&str]) {
        for path in paths {
            let Ok(response) = self.http.get(format!("{base}{path}")).send().await else {
                continue;
            };
            if let Ok(body) = response.bytes().await {
                self.findings
                    .scan(&self.secrets, &format!("{base}{path}"), &body);
            }
        }
    }
}
