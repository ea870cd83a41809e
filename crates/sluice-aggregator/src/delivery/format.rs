//! A state version as a delivery file's bytes: JSON Lines or CSV. Pure: no I/O, no clock.
//!
//! JSON Lines: one `{"key": …, "value": …}` object per entity, in key order. CSV (RFC 4180
//! quoting, `\n` line ends): the header `key`, then the union of the entities' top-level fields,
//! sorted; one row per entity in key order; a string is written as is, `null` and a missing
//! field as an empty cell, any other value as JSON text. An entity that is not an object is
//! written as JSON text in a `_value` column (present only when such an entity is); an
//! entity's own top-level field `key` goes in the column `_key`.

use std::collections::BTreeSet;

use serde_json::Value;
use sluice_config::DeliveryFormat;
use sluice_merge::Entities;

/// The encoded file: its bytes and its row count (entities).
pub struct Encoded {
    /// The file's content.
    pub bytes: Vec<u8>,
    /// Entities written.
    pub rows: usize,
}

/// `entities` in `format` (Parquet: `columnar`). CPU-bound in the state's size: call it off
/// the async workers. Only Parquet can fail (an error of the parquet crate's writer).
pub fn encode(
    entities: &Entities,
    format: DeliveryFormat,
) -> Result<Encoded, ::parquet::errors::ParquetError> {
    let bytes = match format {
        DeliveryFormat::Jsonl => jsonl(entities),
        DeliveryFormat::Csv => csv(entities),
        DeliveryFormat::Parquet => super::columnar::parquet(entities)?,
    };
    Ok(Encoded {
        bytes,
        rows: entities.len(),
    })
}

fn jsonl(entities: &Entities) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        key: &'a str,
        value: &'a sluice_merge::Entity,
    }
    let mut out = Vec::new();
    for (key, value) in entities.iter() {
        // Serializing a JSON value to memory cannot fail.
        if serde_json::to_writer(&mut out, &Line { key, value }).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// The column of entities that are not objects.
pub const NON_OBJECT: &str = "_value";

/// The column of an entity's top-level field: its name, but `_key` for a field named `key`
/// (the first column is the entity's key).
pub fn column_name(field: &str) -> &str {
    if field == "key" { "_key" } else { field }
}

fn csv(entities: &Entities) -> Vec<u8> {
    let mut fields: BTreeSet<String> = BTreeSet::new();
    let mut non_object = false;
    let values: Vec<(&str, Value)> = entities
        .iter()
        .map(|(key, entity)| (&**key, entity.to_value()))
        .collect();
    for (_, value) in &values {
        match value {
            Value::Object(map) => fields.extend(map.keys().cloned()),
            _ => non_object = true,
        }
    }
    let mut out = Vec::new();
    let mut header: Vec<&str> = vec!["key"];
    if non_object {
        header.push(NON_OBJECT);
    }
    header.extend(fields.iter().map(|f| column_name(f)));
    row(
        &mut out,
        header.iter().map(|h| std::borrow::Cow::Borrowed(*h)),
    );
    for (key, value) in &values {
        let mut cells: Vec<std::borrow::Cow<'_, str>> = vec![(*key).into()];
        if non_object {
            cells.push(match value {
                Value::Object(_) => "".into(),
                other => cell(other),
            });
        }
        for field in &fields {
            cells.push(match value.get(field) {
                Some(v) => cell(v),
                None => "".into(),
            });
        }
        row(&mut out, cells.into_iter());
    }
    out
}

/// One value's cell text (before quoting).
fn cell(value: &Value) -> std::borrow::Cow<'_, str> {
    match value {
        Value::Null => "".into(),
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

/// Writes one row: cells quoted when they hold a comma, a quote, a line break or edge spaces.
fn row<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = std::borrow::Cow<'a, str>>) {
    for (i, text) in cells.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let quote =
            text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
        if quote {
            out.push(b'"');
            out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn entities(pairs: &[(&str, Value)]) -> Entities {
        Entities::from_values(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
    }

    #[test]
    fn jsonl_writes_one_key_and_value_object_per_entity_in_key_order() {
        let e = entities(&[("b", json!({"n": 2})), ("a", json!([1, 2]))]);
        let out = encode(&e, DeliveryFormat::Jsonl).unwrap();
        assert_eq!(out.rows, 2);
        assert_eq!(
            String::from_utf8(out.bytes).unwrap(),
            "{\"key\":\"a\",\"value\":[1,2]}\n{\"key\":\"b\",\"value\":{\"n\":2}}\n"
        );
    }

    #[test]
    fn csv_has_key_then_the_sorted_union_of_fields_nested_values_as_json_and_quotes() {
        let e = entities(&[
            ("k2", json!({"z": "a,b", "a": {"x": 1}})),
            (
                "k1",
                json!({"m": null, "a": "say \"hi\"", "n": 1.5, "t": true}),
            ),
        ]);
        let out = encode(&e, DeliveryFormat::Csv).unwrap();
        assert_eq!(
            String::from_utf8(out.bytes).unwrap(),
            "key,a,m,n,t,z\n\
             k1,\"say \"\"hi\"\"\",,1.5,true,\n\
             k2,\"{\"\"x\"\":1}\",,,,\"a,b\"\n"
        );
    }

    #[test]
    fn csv_puts_entities_that_are_not_objects_in_a_value_column() {
        let e = entities(&[("a", json!(7)), ("b", json!({"f": "x"}))]);
        let out = encode(&e, DeliveryFormat::Csv).unwrap();
        assert_eq!(
            String::from_utf8(out.bytes).unwrap(),
            "key,_value,f\na,7,\nb,,x\n"
        );
    }

    #[test]
    fn an_entity_field_named_key_goes_in_its_own_column() {
        let e = entities(&[("a", json!({"key": "a", "n": 1}))]);
        let out = encode(&e, DeliveryFormat::Csv).unwrap();
        assert_eq!(String::from_utf8(out.bytes).unwrap(), "key,_key,n\na,a,1\n");
    }

    #[test]
    fn an_empty_state_is_an_empty_jsonl_file_and_a_csv_header() {
        let e = Entities::default();
        assert!(encode(&e, DeliveryFormat::Jsonl).unwrap().bytes.is_empty());
        assert_eq!(encode(&e, DeliveryFormat::Csv).unwrap().bytes, b"key\n");
    }
}
