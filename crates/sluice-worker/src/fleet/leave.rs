//! Leaving the fleet's group when the worker stops: the revocation is served (the targets
//! handed over make-before-break: the leave unsubscribes, which sends a LeaveGroup even for a
//! static member), and the claims of the new owners are waited for within half the rest of the
//! shutdown grace.
//!
//! What it must NOT do: start anything (an assignment while leaving is ignored), or wait past
//! the shutdown grace.

use std::time::Duration;

use rdkafka::ClientConfig;
use sluice_config::WorkerConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::landed::{batch_of, next_landed};
use crate::supervisor::Supervisor;
use crate::{fleet, http, watch};

/// What leaving the fleet works with.
pub(crate) struct Leave<'a> {
    pub(crate) membership: &'a mut fleet::Membership,
    pub(crate) ownership: &'a mut fleet::Ownership,
    pub(crate) watch: &'a mut Option<watch::Watch>,
    pub(crate) owner: &'a str,
}

/// Leaves the fleet's group, serving the revocation that hands this worker's targets to the
/// others within the shutdown grace: handed over make-before-break (streaming on until the new
/// owners claim them), or with `fleet.handover_timeout: 0s` stopped, drained and checkpointed
/// first.
pub(crate) async fn leave_fleet(
    leave: Leave<'_>,
    supervisor: &mut Supervisor,
    config: &WorkerConfig,
    kafka: &ClientConfig,
    ops: &http::Ops,
    shutdown: &CancellationToken,
) {
    let Leave {
        membership,
        ownership,
        watch,
        owner,
    } = leave;
    let grace = config.shutdown.grace;
    membership.leave();
    let ctx = fleet::Ctx {
        kafka,
        topic: &config.topics.checkpoints,
        ops,
        shutdown,
        grace,
    };
    let deadline = Instant::now() + grace;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, membership.next()).await {
        if let fleet::FleetEvent::Assigned(_) = event {
            continue; // leaving: nothing new starts
        }
        if let Err(error) = ownership.serve(event, supervisor, &ctx).await {
            tracing::warn!(%error, "serving the fleet while leaving");
        }
    }
    // Half the grace at most for the claims: the rest drains what is left.
    let claims_until = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while ownership.offering() && Instant::now() < claims_until {
        tokio::select! {
            Some(landed) = next_landed(watch) => {
                let mut batch = batch_of(watch, landed);
                ownership.landed(&mut batch, supervisor, grace).await;
                for landed in batch {
                    watch::serve(landed, owner, supervisor, &ops.metrics, grace).await;
                }
            }
            _ = tick.tick() => ownership.expire_handovers(supervisor, grace).await,
            () = tokio::time::sleep_until(claims_until) => {}
        }
    }
    tracing::debug!(owned = ?ownership.owned(), "fleet membership ended");
}
