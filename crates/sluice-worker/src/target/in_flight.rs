//! The in-flight deliveries of one target: records handed to Kafka whose answer has not come.
//!
//! What it must NOT do: decide what a delivery's outcome means (the pipe does) or poll anything
//! it does not hold.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use sluice_publish::{Delivered, PublishError};
use tokio::time::Instant;

/// A boxed future that can move between tasks.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A finished delivery: the record's sequence number, when its event arrived, the record (to
/// send again after a failure) and Kafka's answer.
pub(crate) struct Done<R> {
    pub(crate) seq: u64,
    pub(crate) received: Instant,
    pub(crate) record: R,
    pub(crate) result: Result<Delivered, PublishError>,
}

/// One record on its way to Kafka. The common case, a record the producer took, is a plain
/// value in the in-flight set (no box per event). A failure known at once never enters the set:
/// the pipe puts the record back in its queue at once, so later records wait behind it.
pub(crate) enum InFlight<A, R> {
    /// Handed to the producer: resolves on Kafka's answer. `None` once resolved.
    Sent(A, Option<(u64, Instant, R)>),
    /// Any future resolving to a delivery's outcome (the set's tests control when with it).
    #[cfg(test)]
    Other(BoxFuture<Done<R>>),
}

impl<A, R> Future for InFlight<A, R>
where
    A: Future<Output = Result<Delivered, PublishError>> + Unpin,
    R: Unpin,
{
    type Output = Done<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done<R>> {
        match self.get_mut() {
            InFlight::Sent(pending, parts) => {
                let result = ready!(Pin::new(pending).poll(cx));
                match parts.take() {
                    Some((seq, received, record)) => Poll::Ready(Done {
                        seq,
                        received,
                        record,
                        result,
                    }),
                    // Polled again after it resolved: the in-flight set never does that.
                    None => Poll::Pending,
                }
            }
            #[cfg(test)]
            InFlight::Other(future) => future.as_mut().poll(cx),
        }
    }
}

/// The in-flight deliveries of a target.
///
/// At one event a second a target has nothing in flight almost all the time, and one delivery
/// when it has any: that one is a single box, polled directly. A `FuturesUnordered` (two
/// allocations of its own, and one per delivery) exists only while two or more are in flight;
/// ten thousand idle sets would cost a few MiB, and making one per event most of the CPU of
/// the in-flight bookkeeping.
pub(crate) enum InFlightSet<A, R> {
    Empty,
    One(Box<InFlight<A, R>>),
    Many(FuturesUnordered<InFlight<A, R>>),
}

// By hand: a derived `Default` would require `A: Default` and `R: Default`.
#[allow(clippy::derivable_impls)]
impl<A, R> Default for InFlightSet<A, R> {
    fn default() -> Self {
        InFlightSet::Empty
    }
}

impl<A, R> InFlightSet<A, R>
where
    A: Future<Output = Result<Delivered, PublishError>> + Unpin,
    R: Unpin,
{
    pub(crate) fn len(&self) -> usize {
        match self {
            InFlightSet::Empty => 0,
            InFlightSet::One(_) => 1,
            InFlightSet::Many(set) => set.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&mut self, delivery: InFlight<A, R>) {
        match std::mem::take(self) {
            InFlightSet::Empty => *self = InFlightSet::One(Box::new(delivery)),
            InFlightSet::One(first) => {
                let set = FuturesUnordered::new();
                set.push(*first);
                set.push(delivery);
                *self = InFlightSet::Many(set);
            }
            InFlightSet::Many(set) => {
                set.push(delivery);
                *self = InFlightSet::Many(set);
            }
        }
    }

    /// The next finished delivery (`None` when empty).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done<R>>> {
        let next = match self {
            InFlightSet::Empty => return Poll::Ready(None),
            InFlightSet::One(delivery) => Pin::new(delivery.as_mut()).poll(cx).map(Some),
            InFlightSet::Many(set) => set.poll_next_unpin(cx),
        };
        if next.is_ready() {
            *self = match std::mem::take(self) {
                InFlightSet::Many(set) if set.len() > 1 => InFlightSet::Many(set),
                // The last one left goes back to a plain box, polled next with this task's waker.
                InFlightSet::Many(set) => match set.into_iter().next() {
                    Some(last) => InFlightSet::One(Box::new(last)),
                    None => InFlightSet::Empty,
                },
                InFlightSet::One(_) | InFlightSet::Empty => InFlightSet::Empty,
            };
        }
        next
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::sync::oneshot;

    type Answer = std::future::Ready<Result<Delivered, PublishError>>;
    type Set = InFlightSet<Answer, ()>;

    /// A delivery that finishes (with sequence number `seq`) when `tx` is sent to.
    fn delivery(seq: u64) -> (oneshot::Sender<()>, InFlight<Answer, ()>) {
        let (tx, rx) = oneshot::channel::<()>();
        let received = Instant::now();
        let future = InFlight::Other(Box::pin(async move {
            let _ = rx.await;
            Done {
                seq,
                received,
                record: (),
                result: Ok(Delivered {
                    partition: 0,
                    offset: i64::try_from(seq).unwrap(),
                }),
            }
        }));
        (tx, future)
    }

    fn next_ready(set: &mut Set) -> Option<Option<u64>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match set.poll_next(&mut cx) {
            Poll::Ready(done) => Some(done.map(|d| d.seq)),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn the_in_flight_set_yields_every_delivery_in_any_order_and_ends_empty() {
        let mut set = Set::default();
        assert_eq!(next_ready(&mut set), Some(None));
        let (a, first) = delivery(1);
        set.push(first);
        assert!(matches!(set, InFlightSet::One(_)));
        assert_eq!(next_ready(&mut set), None);
        let (b, second) = delivery(2);
        let (c, third) = delivery(3);
        set.push(second);
        set.push(third);
        assert_eq!(set.len(), 3);
        b.send(()).unwrap();
        assert_eq!(next_ready(&mut set), Some(Some(2)));
        a.send(()).unwrap();
        assert_eq!(next_ready(&mut set), Some(Some(1)));
        // One left: back to a plain box, which still finishes.
        assert!(matches!(set, InFlightSet::One(_)));
        assert_eq!(next_ready(&mut set), None);
        c.send(()).unwrap();
        assert_eq!(next_ready(&mut set), Some(Some(3)));
        assert!(set.is_empty());
        assert_eq!(next_ready(&mut set), Some(None));
    }
}
