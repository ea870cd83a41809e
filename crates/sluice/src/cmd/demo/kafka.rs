//! The demo's in-memory Kafka: librdkafka's mock cluster with the topics the config names.
//!
//! What it must NOT do: pass for a broker anyone could deploy on (it keeps everything in memory
//! and loses it at exit).

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

use super::MOCK_BROKERS;

/// librdkafka's mock cluster on a thread of its own (its handle cannot leave the thread that
/// made it), with the demo's topics created, until [`EmbeddedKafka::stop`] or drop.
pub(super) struct EmbeddedKafka {
    pub(super) bootstrap: String,
    pub(super) stop: Option<std::sync::mpsc::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedKafka {
    pub(super) async fn start(topics: Vec<(String, i32)>) -> anyhow::Result<EmbeddedKafka> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-demo-kafka".to_owned())
            .spawn(move || {
                let cluster = match MockCluster::new(MOCK_BROKERS) {
                    Ok(cluster) => cluster,
                    Err(error) => {
                        let _ = ready_tx.send(Err(format!("cannot start it: {error}")));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(error) = cluster.create_topic(topic, *partitions, MOCK_BROKERS) {
                        let _ = ready_tx.send(Err(format!("cannot create topic {topic}: {error}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Until `stop` is called or the sender dropped.
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .context("cannot start the embedded kafka thread")?;
        // From here on, dropping `kafka` (an error, or the caller giving up) ends the thread.
        let mut kafka = EmbeddedKafka {
            bootstrap: String::new(),
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        kafka.bootstrap = ready_rx
            .await
            .map_err(|_| anyhow::anyhow!("embedded kafka: the thread ended before it was ready"))?
            .map_err(|error| anyhow::anyhow!("embedded kafka: {error}"))?;
        Ok(kafka)
    }

    /// Destroys the cluster (after every client of it is gone) and waits for its thread.
    pub(super) async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
