//! The thread that owns a librdkafka mock cluster for a [`crate::TestKafka`]: the cluster's raw
//! handle cannot leave the thread that made it, so jobs are sent to it.
//!
//! What it must NOT do: outlive its `TestKafka` (dropping it destroys the cluster).

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::kafka::TestKafkaError;

/// The mock cluster type [`TestKafka::with_mock`] hands to its closure.
pub type Mock = MockCluster<'static, DefaultProducerContext>;

/// Work to run on the thread that owns the mock cluster.
type MockJob = Box<dyn FnOnce(&Mock) + Send>;

/// The thread that owns a [`MockCluster`] (a raw handle that cannot leave the thread that made
/// it), runs jobs on it, and destroys it when the `TestKafka` drops.
#[derive(Debug)]
pub(crate) struct MockThread {
    jobs: Option<mpsc::Sender<MockJob>>,
    thread: Option<JoinHandle<()>>,
}

impl MockThread {
    pub(crate) fn start(brokers: i32) -> Result<(String, MockThread), TestKafkaError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<MockJob>();
        let thread = std::thread::Builder::new()
            .name("sluice-kafka-mock".to_owned())
            .spawn(move || match MockCluster::new(brokers) {
                Ok(cluster) => {
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    // Ends when the sender is dropped: the `TestKafka` is gone.
                    for job in jobs_rx {
                        job(&cluster);
                    }
                    drop(cluster);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| TestKafkaError::MockThread(e.to_string()))?;
        let mock = MockThread {
            jobs: Some(jobs_tx),
            thread: Some(thread),
        };
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| TestKafkaError::MockThread("exited before it was ready".to_owned()))??;
        Ok((bootstrap, mock))
    }

    /// Runs `f` on the mock cluster's thread and returns its result.
    pub(crate) fn run<R, F>(&self, f: F) -> Result<R, TestKafkaError>
    where
        R: Send + 'static,
        F: FnOnce(&Mock) -> R + Send + 'static,
    {
        let gone = || TestKafkaError::MockThread("mock cluster thread is gone".to_owned());
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: MockJob = Box::new(move |cluster| {
            let _ = reply_tx.send(f(cluster));
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())
    }
}

impl Drop for MockThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
