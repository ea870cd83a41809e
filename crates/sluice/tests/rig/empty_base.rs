//! A rig whose one `replace` target has an empty base state (version 0, served here) and no
//! upstream: the test writes the deltas, as the worker would.

use axum::Router;
use axum::routing::get;
use sluice_testkit::TestKafka;
use tokio::net::TcpListener;

use super::Rig;

impl Rig {
    /// A rig on the test Kafka with the one target `target` (key `/key`, version `/version`,
    /// `replace`), whose base state is `{"version":0,"items":[]}`.
    pub async fn with_empty_base_target(name: &str, target: &str) -> Rig {
        let rig = Rig::with_kafka(name, TestKafka::start().expect("test kafka")).await;
        let base = Router::new().route("/base", get(|| async { r#"{"version":0,"items":[]}"# }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base_url = format!(
            "http://{}/base",
            listener.local_addr().expect("a bound address")
        );
        tokio::spawn(async move { axum::serve(listener, base).await });
        rig.target(
            target,
            "http://127.0.0.1:9/stream",
            &format!(
                "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n    version: /version\n\
                 \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n"
            ),
        );
        rig
    }
}
