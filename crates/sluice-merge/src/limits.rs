//! The bounds of a patched entity: its size as compact JSON and its nesting depth. A JSON Patch
//! is applied one operation at a time, each checked before it runs against what it would make
//! of the entity (`copy` of the root, repeated, doubles the entity per operation; `add` and
//! `move` can nest without end), so an entity over a limit is never built and never has to be
//! dropped or serialised (a very deep tree overflows the stack there).
//!
//! Must not: allocate per operation beyond what the patch itself does, or walk more than the
//! entity once per delta plus the values an operation adds or replaces.

use json_patch::PatchOperation;
use serde_json::Value;

use crate::error::MalformedError;

/// The most a patched entity may be. An entity that is already bigger (a base-state item, say)
/// is kept; a patch may not make it bigger or deeper than it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityLimits {
    /// Most bytes of the entity as compact JSON (counted as written, string escapes aside).
    pub max_entity_bytes: usize,
    /// Most levels of nested arrays and objects (`1` = `{}` or `[1, 2]`, `2` = `{"a": []}`).
    pub max_depth: usize,
}

impl EntityLimits {
    /// Default [`EntityLimits::max_entity_bytes`]: the parser's default event size, the largest
    /// entity a `replace` delta can bring.
    pub const DEFAULT_MAX_ENTITY_BYTES: usize = 4 * 1024 * 1024;
    /// Default [`EntityLimits::max_depth`].
    pub const DEFAULT_MAX_DEPTH: usize = 64;
    /// How many times [`EntityLimits::max_entity_bytes`] the values one delta's operations
    /// may write, copy or replace in all (each is walked, most are cloned): a patch that
    /// copies a large value onto the same place again and again stays within the size, yet
    /// would hold the consumer thread for as long as its operations last.
    pub const WORK_FACTOR: usize = 8;
    /// The highest [`EntityLimits::max_depth`] config accepts: snapshots and base states are
    /// read back with serde_json's nesting limit of 128, and a snapshot puts an entity inside
    /// its own levels.
    pub const MAX_MAX_DEPTH: usize = 100;
}

impl Default for EntityLimits {
    fn default() -> EntityLimits {
        EntityLimits {
            max_entity_bytes: EntityLimits::DEFAULT_MAX_ENTITY_BYTES,
            max_depth: EntityLimits::DEFAULT_MAX_DEPTH,
        }
    }
}

/// A value's size as compact JSON and its depth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Measure {
    bytes: usize,
    depth: usize,
}

/// Measures `value`. Values reach here parsed by serde_json (nesting at most 128) or built
/// under these limits, so the recursion is bounded.
fn measure(value: &Value) -> Measure {
    match value {
        Value::Null | Value::Bool(true) => Measure { bytes: 4, depth: 0 },
        Value::Bool(false) => Measure { bytes: 5, depth: 0 },
        Value::Number(n) => Measure {
            bytes: number_bytes(n),
            depth: 0,
        },
        Value::String(s) => Measure {
            bytes: s.len() + 2,
            depth: 0,
        },
        Value::Array(items) => {
            let mut m = Measure {
                bytes: 2 + items.len().saturating_sub(1),
                depth: 1,
            };
            for item in items {
                let inner = measure(item);
                m.bytes = m.bytes.saturating_add(inner.bytes);
                m.depth = m.depth.max(inner.depth + 1);
            }
            m
        }
        Value::Object(fields) => {
            let mut m = Measure {
                bytes: 2 + fields.len().saturating_sub(1),
                depth: 1,
            };
            for (key, item) in fields {
                let inner = measure(item);
                m.bytes = m.bytes.saturating_add(key.len() + 3 + inner.bytes);
                m.depth = m.depth.max(inner.depth + 1);
            }
            m
        }
    }
}

/// Digits of an integer; a float is counted at its longest form.
fn number_bytes(n: &serde_json::Number) -> usize {
    if let Some(u) = n.as_u64() {
        u.checked_ilog10().map_or(1, |d| d as usize + 1)
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1)
            + 1
    } else {
        24
    }
}

/// Applies `ops` to `doc` one by one, each checked first against `limits`. On error `doc` may
/// hold the operations before the failing one: the caller patches a copy.
pub(crate) fn patch(
    doc: &mut Value,
    ops: &[PatchOperation],
    limits: &EntityLimits,
) -> Result<(), MalformedError> {
    let start = measure(doc);
    let max_bytes = limits.max_entity_bytes.max(start.bytes);
    let max_depth = limits.max_depth.max(start.depth);
    // An upper bound of the entity's size (removals count their value, not its key) and its
    // depth (a removal never lowers it): exact enough to hold the limits.
    let max_work = max_bytes.saturating_mul(EntityLimits::WORK_FACTOR);
    let mut now = start;
    let mut work = 0usize;
    for (index, op) in ops.iter().enumerate() {
        let (next, touched) = after(doc, op, now);
        work = work.saturating_add(touched);
        if work > max_work {
            return Err(MalformedError::TooCostly {
                operation: index,
                bytes: work,
                max: max_work,
            });
        }
        if next.bytes > max_bytes {
            return Err(MalformedError::TooLarge {
                operation: index,
                bytes: next.bytes,
                max: max_bytes,
            });
        }
        if next.depth > max_depth {
            return Err(MalformedError::TooDeep {
                operation: index,
                depth: next.depth,
                max: max_depth,
            });
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| {
            MalformedError::PatchFailed(format!(
                "operation '/{index}' failed at path '{}': {}",
                e.path, e.kind
            ))
        })?;
        now = next;
    }
    Ok(())
}

/// The bound of the entity after `op`, from its bound `now` before it, and the bytes of the
/// values `op` writes, copies or replaces.
fn after(doc: &Value, op: &PatchOperation, now: Measure) -> (Measure, usize) {
    match op {
        PatchOperation::Add(op) => {
            let value = measure(&op.value);
            let (next, replaced) = put(doc, &op.path, value, false, now);
            (next, value.bytes + replaced)
        }
        PatchOperation::Replace(op) => {
            let value = measure(&op.value);
            let (next, replaced) = put(doc, &op.path, value, true, now);
            (next, value.bytes + replaced)
        }
        PatchOperation::Copy(op) => {
            let from = op.from.resolve(doc).ok().map(measure).unwrap_or_default();
            let (next, replaced) = put(doc, &op.path, from, false, now);
            (next, from.bytes + replaced)
        }
        PatchOperation::Move(op) => {
            let from = op.from.resolve(doc).ok().map(measure).unwrap_or_default();
            let (moved, replaced) = put(doc, &op.path, from, false, now);
            let next = if within(op.from.as_str(), op.path.as_str()) {
                // The value replaces one that holds it: what it replaces is smaller by it.
                moved
            } else {
                // The value leaves its place: only its new key and its new depth count.
                Measure {
                    bytes: moved.bytes.saturating_sub(from.bytes),
                    depth: moved.depth,
                }
            };
            (next, from.bytes + replaced)
        }
        PatchOperation::Remove(op) => {
            let gone = op.path.resolve(doc).ok().map(measure).unwrap_or_default();
            let next = Measure {
                bytes: now.bytes.saturating_sub(gone.bytes),
                depth: now.depth,
            };
            (next, gone.bytes)
        }
        // Its value is the patch's own, which the delta's size bounds.
        PatchOperation::Test(_) => (now, 0),
    }
}

/// Whether the pointer `inner` is `outer` or below it.
fn within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The bound after `value` is written at `path` (`replace`: the value there goes), and the
/// bytes of the value it replaces.
fn put(
    doc: &Value,
    path: &json_patch::jsonptr::Pointer,
    value: Measure,
    replace: bool,
    now: Measure,
) -> (Measure, usize) {
    let Some((parent, token)) = path.split_back() else {
        // The root: the value becomes the whole entity.
        return (value, now.bytes);
    };
    let depth = now.depth.max(path.count() + value.depth);
    let (overhead, replaced) = match parent.resolve(doc).ok() {
        Some(Value::Object(fields)) => {
            let key = token.decoded();
            match fields.get(key.as_ref()) {
                Some(old) => (0, measure(old).bytes),
                // Quotes, colon and comma.
                None => (key.len() + 4, 0),
            }
        }
        Some(Value::Array(items)) if replace => {
            let old = token
                .decoded()
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(measure)
                .unwrap_or_default();
            (0, old.bytes)
        }
        // An array insertion, or a parent that does not exist (the operation will fail).
        _ => (1, 0),
    };
    let next = Measure {
        bytes: now
            .bytes
            .saturating_add(overhead + value.bytes)
            .saturating_sub(replaced),
        depth,
    };
    (next, replaced)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ops(value: Value) -> Vec<PatchOperation> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_measure_is_the_compact_json_length() {
        for value in [
            json!(null),
            json!(false),
            json!(-120),
            json!(0),
            json!("abc"),
            json!([]),
            json!({}),
            json!({"a": [1, true, {"b": null}], "cd": "x", "e": 12345678901u64}),
        ] {
            let text = serde_json::to_string(&value).unwrap();
            assert_eq!(measure(&value).bytes, text.len(), "{text}");
        }
        assert_eq!(measure(&json!(1)).depth, 0);
        assert_eq!(measure(&json!([])).depth, 1);
        assert_eq!(measure(&json!({"a": [[]]})).depth, 3);
    }

    #[test]
    fn the_bound_is_never_below_the_result() {
        let limits = EntityLimits {
            max_entity_bytes: usize::MAX,
            max_depth: 100,
        };
        let mut doc = json!({"a": [1, 2], "b": {"c": "x"}});
        let patch = ops(json!([
            {"op": "add", "path": "/a/0", "value": 9},
            {"op": "add", "path": "/a/-", "value": [1]},
            {"op": "replace", "path": "/b/c", "value": "longer"},
            {"op": "copy", "from": "/b", "path": "/d"},
            {"op": "move", "from": "/a", "path": "/d/a"},
            {"op": "remove", "path": "/b"},
            {"op": "add", "path": "/b", "value": {"x": {"y": []}}},
            {"op": "move", "from": "/b/x", "path": "/b"},
            {"op": "move", "from": "/d/c", "path": "/d/c"},
            {"op": "copy", "from": "/d/a", "path": "/d"},
            {"op": "move", "from": "/d/0", "path": ""},
        ]));
        let mut now = measure(&doc);
        for op in &patch {
            now = after(&doc, op, now).0;
            json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).unwrap();
            let exact = measure(&doc);
            assert!(now.bytes >= exact.bytes, "{op}: {now:?} < {exact:?}");
            assert!(now.depth >= exact.depth, "{op}: {now:?} < {exact:?}");
        }
        let copy = doc.clone();
        patch_ok(&mut doc, &[], &limits);
        assert_eq!(doc, copy);
    }

    fn patch_ok(doc: &mut Value, ops: &[PatchOperation], limits: &EntityLimits) {
        patch(doc, ops, limits).unwrap();
    }
}
