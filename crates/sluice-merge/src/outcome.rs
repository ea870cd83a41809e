//! What goes into a merger (one Kafka record) and what comes out of it (the closed set of
//! outcomes, the change to publish, the base fetch to start).

use std::sync::Arc;

use crate::entity::Entity;

use crate::error::MalformedError;

/// One record from Kafka, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input<'a> {
    /// The `sse.id` header (`None` when the event had no id).
    pub id: Option<&'a str>,
    /// The `sse.event` header (`message` by default).
    pub event: &'a str,
    /// The record value: the SSE data as received (should be JSON).
    pub data: &'a [u8],
    /// The `sluice.connection` header: the worker's connection generation.
    pub connection: Option<u64>,
    /// The `sluice.resume` header, present only on the first record of a connection generation:
    /// the `Last-Event-ID` the worker sent when opening it; `""` = it did not resume.
    pub resume: Option<&'a str>,
    /// The record's offset in its partition (all of a target's records are in one partition),
    /// so records that were already in Kafka when a base fetch started are known to be in that
    /// base ([`crate::Merger::fetch_started_at`]). `None`: not known.
    pub offset: Option<i64>,
}

impl<'a> Input<'a> {
    /// A record of type `event` with `data` and no headers besides.
    pub fn new(event: &'a str, data: &'a [u8]) -> Input<'a> {
        Input {
            id: None,
            event,
            data,
            connection: None,
            resume: None,
            offset: None,
        }
    }
}

/// What [`crate::Merger::offer`] did with a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An entity changed (or was deleted).
    Applied(Change),
    /// Waiting for a base state: kept in the bounded buffer.
    Buffered,
    /// The version is at or below the base state's version, or (a target without versions)
    /// the base state holds it already (see [`crate::Merger::fetch_started_at`]): dropped.
    Stale,
    /// Already applied (the version is not newer than the state's, or an unversioned target saw
    /// the `sse.id` in its dedupe window): dropped.
    Duplicate,
    /// The event type is one of `ignore_events`.
    Ignored,
    /// The record could not be applied; the state is unchanged and the target goes on.
    Malformed(MalformedError),
    /// A fresh base state is needed (a [`FetchRequest`] is pending).
    Resnapshot(ResnapshotReason),
}

impl Outcome {
    /// The bounded label: `applied`, `buffered`, `stale`, `duplicate`, `ignored`, `malformed`,
    /// `resnapshot`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied(_) => "applied",
            Outcome::Buffered => "buffered",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Malformed(_) => "malformed",
            Outcome::Resnapshot(_) => "resnapshot",
        }
    }
}

/// One entity changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The merger's change sequence after this change (see [`crate::Merger::change_seq`]).
    pub seq: u64,
    /// The entity key.
    pub key: Arc<str>,
    /// The new entity; `None` = deleted.
    pub value: Option<Entity>,
}

/// Why a fresh base state is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResnapshotReason {
    /// The merger is new: it has never had a base state.
    Initial,
    /// A delta's versions do not follow the state's: some are missing.
    Gap,
    /// A JSON Patch delta names an entity the state does not have.
    UnknownEntity,
    /// The worker opened a new connection without resuming: deltas in between are lost.
    Generation,
    /// The upstream sent one of `reset_events`.
    ResetEvent,
    /// The records after the state are no longer in Kafka (retention ran ahead of the
    /// aggregator): the deltas in between are lost.
    OffsetOutOfRange,
    /// The buffer of deltas held for a base state was full, and no version could tell whether
    /// the base being fetched holds its oldest delta: the held ones are dropped, and a base
    /// fetched after them is needed.
    BufferFull,
}

impl ResnapshotReason {
    /// Every reason.
    pub const ALL: [Self; 7] = [
        ResnapshotReason::Initial,
        ResnapshotReason::Gap,
        ResnapshotReason::UnknownEntity,
        ResnapshotReason::Generation,
        ResnapshotReason::ResetEvent,
        ResnapshotReason::OffsetOutOfRange,
        ResnapshotReason::BufferFull,
    ];

    /// The log and metric label: `initial`, `gap`, `unknown_entity`, `generation`,
    /// `reset_event`, `offset_out_of_range`, `buffer_full`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResnapshotReason::Initial => "initial",
            ResnapshotReason::Gap => "gap",
            ResnapshotReason::UnknownEntity => "unknown_entity",
            ResnapshotReason::Generation => "generation",
            ResnapshotReason::ResetEvent => "reset_event",
            ResnapshotReason::OffsetOutOfRange => "offset_out_of_range",
            ResnapshotReason::BufferFull => "buffer_full",
        }
    }
}

/// A base state to fetch; its body goes to [`crate::Merger::load_base`] with `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    /// The fetch epoch the base must be loaded with.
    pub epoch: u64,
    /// Why it is needed.
    pub reason: ResnapshotReason,
}

/// What [`crate::Merger::load_base`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseApplied {
    /// Entities after the base and the buffered deltas.
    pub entities: usize,
    /// The state's version after everything was applied.
    pub version: Option<u64>,
    /// What happened to the buffered deltas.
    pub replayed: Counts,
    /// The buffered deltas revealed a gap (or another reason): another base state is needed, and
    /// a new [`FetchRequest`] is pending.
    pub resnapshot: Option<ResnapshotReason>,
}

/// Deltas by outcome.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Applied.
    pub applied: u64,
    /// At or below the base state's version, or (unversioned) offered before its fetch
    /// started: the base holds it.
    pub stale: u64,
    /// Already applied.
    pub duplicate: u64,
    /// Ignored event types.
    pub ignored: u64,
    /// Could not be applied.
    pub malformed: u64,
}
