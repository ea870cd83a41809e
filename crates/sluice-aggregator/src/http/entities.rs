//! `GET /v1/targets/{t}/entities`: a target's entities in key order, a page at a time. The first
//! page is read from the current version (after any `min_version` / `min_seq` wait); a page with
//! more after it returns an opaque cursor that pins that version, so the pages of one walk are
//! one state however the target changes meanwhile, or 410 once the version is no longer kept.
//! `fields` projects each entity to the values at the given JSON pointers. It must not read the
//! state anywhere but from one [`crate::versions::StateView`].

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use sluice_merge::Entity;

use super::read::{self, Wait, bad_param};
use super::{json_response, not_owned};
use crate::shared::Shared;
use crate::versions::PINNED_VERSIONS;

/// Entities per page when the client gives no `limit`.
pub const DEFAULT_LIMIT: u64 = 100;
/// The largest `limit`.
pub const MAX_LIMIT: u64 = 1000;

/// Where a walk is: the cell and pinned version it reads, its prefix and the last key sent.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The cell's incarnation.
    c: u64,
    /// The pin id of the version.
    v: u64,
    /// The prefix.
    p: String,
    /// The last key sent.
    a: String,
}

impl Cursor {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(text: &str) -> Option<Cursor> {
        if text.len() % 2 != 0 || !text.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
        serde_json::from_slice(&bytes?).ok()
    }
}

/// A JSON pointer (RFC 6901) as a `fields` entry: empty, or `/` then tokens with `~` only as
/// `~0` or `~1`.
fn valid_pointer(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    if !pointer.starts_with('/') {
        return false;
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

/// The entity as an object of the values at `fields` (a pointer that finds nothing is left out).
fn project(entity: &Entity, fields: &[String]) -> Value {
    let owned;
    let tree: &Value = match entity {
        Entity::Tree(tree) => tree,
        Entity::Text(_) => {
            owned = entity.to_value();
            &owned
        }
    };
    let mut object = Map::new();
    for field in fields {
        if let Some(value) = tree.pointer(field) {
            object.insert(field.clone(), value.clone());
        }
    }
    Value::Object(object)
}

fn expired(target: &str) -> Response {
    json_response(
        StatusCode::GONE,
        serde_json::to_vec(&json!({
            "error": format!(
                "target {target:?}: the version this cursor reads is no longer kept (the last {PINNED_VERSIONS} paged versions are); start again without a cursor"
            ),
            "code": "version_expired",
        }))
        .unwrap_or_default(),
    )
}

/// The handler.
#[utoipa::path(get, path = "/v1/targets/{target}/entities", tag = "state", security((), ("bearer" = [])),
    params(
        ("target" = String, Path, description = "The target id"),
        ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("after" = Option<String>, Query, description = "Only keys after this one"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Entities per page (default 100, at most 1000)"),
        ("fields" = Option<String>, Query, pattern = "^(/([^~/,]|~[01])*)*(,(/([^~/,]|~[01])*)*)*$", description = "Comma-separated JSON pointers: each entity becomes an object of those pointers' values"),
        ("cursor" = Option<String>, Query, description = "The `next` of the previous page (opaque: any other value is a 400): the same version, where it stopped; not with `prefix`, `after`, `min_version` or `min_seq`"),
        super::openapi::Wait,
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer"),
    ),
    responses(
        (status = 200, description = "A page: version, change_seq, entities (key and entity, in key order), next (a cursor, or null on the last page)", body = Object),
        (status = 410, description = "The cursor's version is no longer kept: start again", body = super::openapi::Error),
        super::openapi::ReadAnswers,
    ))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    match page(&shared, &target, raw.as_deref(), &headers).await {
        Ok(response) | Err(response) => response,
    }
}

async fn page(
    shared: &Shared,
    target: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, Response> {
    let mut allowed = vec!["prefix", "after", "limit", "fields", "cursor"];
    allowed.extend(read::WAIT_PARAMS);
    let params = read::params(raw, &allowed).map_err(|r| *r)?;
    let limit = read::number(&params, "limit")
        .map_err(|r| *r)?
        .unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad_param(
            "limit",
            format!("{limit} is not between 1 and {MAX_LIMIT}"),
        ));
    }
    let fields: Option<Vec<String>> = params
        .get("fields")
        .map(|f| f.split(',').map(str::to_owned).collect());
    if let Some(bad) = fields.iter().flatten().find(|f| !valid_pointer(f)) {
        return Err(bad_param(
            "fields",
            format!("{bad:?} is not a JSON pointer (\"\" or \"/a/b\", ~ only as ~0 or ~1)"),
        ));
    }
    let wait = Wait::from_params(&params).map_err(|r| *r)?;

    let (cell, view, prefix, after, pin) = match params.get("cursor") {
        Some(text) => {
            for name in ["prefix", "after", "min_version", "min_seq"] {
                if params.contains_key(name) {
                    return Err(bad_param(
                        name,
                        "not with a cursor (the cursor holds the walk's prefix, position and version)",
                    ));
                }
            }
            let cursor = Cursor::decode(text).ok_or_else(|| bad_param("cursor", "not a cursor"))?;
            let cell = shared.store.get(target).ok_or_else(|| not_owned(target))?;
            if cursor.c != cell.incarnation {
                return Err(expired(target));
            }
            let view = cell.pins.get(cursor.v).ok_or_else(|| expired(target))?;
            (cell, view, cursor.p, Some(cursor.a), Some(cursor.v))
        }
        None => {
            let (cell, view) = read::current(shared, target, wait).await.map_err(|r| *r)?;
            let prefix = params.get("prefix").cloned().unwrap_or_default();
            let after = params.get("after").cloned();
            (cell, Arc::new(view), prefix, after, None)
        }
    };
    if let Some(response) = read::not_modified(headers, &view) {
        return Ok(response);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut entries = Vec::with_capacity(limit.min(64));
    let mut more = false;
    let mut last_key = None;
    for (key, entity) in view.entities.page(&prefix, after.as_deref()) {
        if entries.len() == limit {
            more = true;
            break;
        }
        let value = match &fields {
            Some(fields) => project(entity, fields),
            None => serde_json::to_value(entity).unwrap_or(Value::Null),
        };
        entries.push(json!({ "key": &**key, "value": value }));
        last_key = Some(Arc::clone(key));
    }
    let next = match (more, last_key) {
        (true, Some(key)) => {
            let pin = pin.unwrap_or_else(|| cell.pins.pin(&view));
            Some(
                Cursor {
                    c: cell.incarnation,
                    v: pin,
                    p: prefix,
                    a: key.to_string(),
                }
                .encode(),
            )
        }
        _ => None,
    };
    let body = json!({
        "target": view.target(),
        "version": view.version,
        "change_seq": view.change_seq,
        "synced": view.synced,
        "as_of": view.as_of(),
        "kafka": view.kafka(),
        "entities": entries,
        "next": next,
    });
    Ok(read::with_version(
        json_response(
            StatusCode::OK,
            serde_json::to_vec(&body).unwrap_or_default(),
        ),
        &view,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_garbage_is_refused() {
        let cursor = Cursor {
            c: u64::MAX,
            v: 3,
            p: "a\"/é".into(),
            a: "z".into(),
        };
        let back = Cursor::decode(&cursor.encode()).expect("a cursor");
        assert_eq!(
            (back.c, back.v, &*back.p, &*back.a),
            (u64::MAX, 3, "a\"/é", "z")
        );
        for bad in ["", "0", "zz", "7b7d", "é1"] {
            assert!(Cursor::decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn pointers_are_checked() {
        for good in ["", "/a", "/a/0", "/~0~1", "/"] {
            assert!(valid_pointer(good), "{good:?}");
        }
        for bad in ["a", "/~", "/~2", "/a~"] {
            assert!(!valid_pointer(bad), "{bad:?}");
        }
    }
}
