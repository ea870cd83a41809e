//! The worker's `delivery:` section: at least once (the default: an idempotent producer,
//! checkpoints written after their events are acknowledged) or exactly once (events and the
//! checkpoints that cover them in one Kafka transaction, committed at an interval).

use std::time::Duration;

/// `delivery.mode` and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryGuarantee {
    /// Every event at least once, none lost (the default).
    #[default]
    AtLeastOnce,
    /// Every event exactly once for `read_committed` readers.
    ExactlyOnce(Transactions),
}

/// How the transactions of `delivery.mode: exactly_once` are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transactions {
    /// A transaction is committed this long after its first record (`delivery.commit_interval`).
    pub commit_interval: Duration,
    /// …or once it holds this many records (`delivery.max_records`), whichever comes first.
    pub max_records: usize,
    /// `transaction.timeout.ms`: how long the broker keeps a transaction of a worker that died
    /// open (the new owner's start ends it sooner); also bounds each record's delivery.
    pub transaction_timeout: Duration,
}

impl Transactions {
    /// Defaults.
    pub const DEFAULT: Transactions = Transactions {
        commit_interval: Duration::from_millis(100),
        max_records: 10_000,
        transaction_timeout: Duration::from_secs(60),
    };
}
