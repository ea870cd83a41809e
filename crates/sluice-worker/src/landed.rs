//! Serving the checkpoint records other worker processes write, as the watch reports them:
//! those that landed at once are served together, a fleet's handover first (claims stop their
//! targets together), then each other one as `watch::serve` says.
//!
//! What it must NOT do: read Kafka itself (the watch does) or decide ownership (the fleet does).

use std::time::Duration;

use crate::supervisor::Supervisor;
use crate::{fleet, http, watch};

/// The next record of another process on the checkpoint topic (pending for ever without one).
pub(crate) async fn next_landed(watch: &mut Option<watch::Watch>) -> Option<watch::Landed> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// Records of other processes that landed on the checkpoint topic at once are served
/// together: a handover's claims stop their targets together.
const LANDED_BATCH: usize = 4096;

pub(crate) fn batch_of(
    watch: &mut Option<watch::Watch>,
    first: watch::Landed,
) -> Vec<watch::Landed> {
    match watch {
        Some(watch) => watch.batch(first, LANDED_BATCH),
        None => vec![first],
    }
}

/// Serves `first` and the records that landed with it: a fleet's handovers first, then each
/// other as [`watch::serve`] says.
pub(crate) async fn serve_landed(
    first: watch::Landed,
    watch: &mut Option<watch::Watch>,
    fleet: &mut Option<(fleet::Membership, fleet::Ownership)>,
    owner: &str,
    supervisor: &mut Supervisor,
    ops: &http::Ops,
    grace: Duration,
) {
    let mut batch = batch_of(watch, first);
    if let Some((_, ownership)) = fleet {
        ownership.landed(&mut batch, supervisor, grace).await;
    }
    for landed in batch {
        watch::serve(landed, owner, supervisor, &ops.metrics, grace).await;
    }
}
