//! Merge throughput: deltas per second through `Merger::offer` for a synced target of 10k
//! entities, with small realistic deltas (`{"key":"E0042","price":101.25,"qty":7,"version":N}`)
//! pre-rendered as the bytes Kafka would hand over, once per strategy (`replace`,
//! `merge_patch`). Each iteration offers a batch of contiguous versions to a freshly restored
//! merger (the restore is not timed); every offer's outcome is consumed. `replace, a version
//! per 100 deltas` also takes an immutable version of the entities (as a reader does) every 100
//! deltas and holds it until the next, so the merge pays for the nodes it must copy.
//!
//! `cargo bench -j2 -p sluice-merge --bench merge -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sluice_merge::{Input, MergeSpec, Merger, Outcome, Strategy, TargetSnapshot, VersionSpec};

/// Entities in the target.
const ENTITIES: usize = 10_000;
/// Deltas per iteration (each entity twice, in a scattered order).
const BATCH: usize = 20_000;

fn spec(strategy: Strategy) -> Arc<MergeSpec> {
    Arc::new(MergeSpec {
        base_items: "/items".into(),
        base_key: "/key".into(),
        base_version: Some("/version".into()),
        key: "/key".into(),
        value: None,
        version: VersionSpec::Single("/version".into()),
        contiguous: true,
        strategy,
        delete_events: vec!["delete".into()],
        ignore_events: vec!["heartbeat".into()],
        reset_events: vec!["reset".into()],
        max_buffered: MergeSpec::DEFAULT_MAX_BUFFERED,
        dedupe_window: MergeSpec::DEFAULT_DEDUPE_WINDOW,
        max_buffered_bytes: MergeSpec::DEFAULT_MAX_BUFFERED_BYTES,
        max_entities: MergeSpec::DEFAULT_MAX_ENTITIES,
        limits: Default::default(),
    })
}

fn key(i: usize) -> String {
    format!("E{i:04}")
}

fn snapshot() -> TargetSnapshot {
    let entities: BTreeMap<String, sluice_merge::Entity> = (0..ENTITIES)
        .map(|i| {
            let value = json!({"key": key(i), "price": 100.0, "qty": 1, "version": 0});
            (key(i), value.into())
        })
        .collect();
    TargetSnapshot {
        version: Some(0),
        change_seq: 1,
        last_connection: Some(1),
        recent_ids: Vec::new(),
        entities,
    }
}

/// Deltas with versions 1..=BATCH.
fn deltas() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let entity = (i * 7919) % ENTITIES;
            let price = 100.0 + (i % 400) as f64 / 4.0;
            let qty = i % 50 + 1;
            let version = i + 1;
            format!(
                r#"{{"key":"{}","price":{price:.2},"qty":{qty},"version":{version}}}"#,
                key(entity)
            )
            .into_bytes()
        })
        .collect()
}

fn offer_all(merger: &mut Merger, deltas: &[Vec<u8>]) -> usize {
    offer_all_with_versions(merger, deltas, usize::MAX)
}

/// [`offer_all`], taking a version of the entities every `every` deltas (held until the next).
fn offer_all_with_versions(merger: &mut Merger, deltas: &[Vec<u8>], every: usize) -> usize {
    let mut applied = 0;
    let mut held = None;
    for (i, data) in deltas.iter().enumerate() {
        if i % every == every - 1 {
            held = Some(black_box(merger.entities_version()));
        }
        let input = Input {
            id: None,
            event: "message",
            data,
            connection: Some(1),
            resume: None,
            offset: None,
        };
        if let Outcome::Applied(change) = merger.offer(black_box(&input)) {
            applied += 1;
            black_box(change);
        }
    }
    drop(held);
    applied
}

fn merge(c: &mut Criterion) {
    let snapshot = snapshot();
    let deltas = deltas();
    let mut group = c.benchmark_group("merge");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    for strategy in [Strategy::Replace, Strategy::MergePatch] {
        let spec = spec(strategy);
        // Every delta must apply, or the bench measures something else.
        let mut check = Merger::restore(Arc::clone(&spec), snapshot.clone());
        assert_eq!(
            offer_all(&mut check, &deltas),
            BATCH,
            "{}",
            strategy.as_str()
        );
        group.bench_function(strategy.as_str(), |b| {
            b.iter_batched_ref(
                || Merger::restore(Arc::clone(&spec), snapshot.clone()),
                |merger| offer_all(merger, &deltas),
                BatchSize::PerIteration,
            )
        });
    }
    let spec = spec(Strategy::Replace);
    group.bench_function("replace, a version per 100 deltas", |b| {
        b.iter_batched_ref(
            || Merger::restore(Arc::clone(&spec), snapshot.clone()),
            |merger| offer_all_with_versions(merger, &deltas, 100),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
