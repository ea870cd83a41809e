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
use sluice_config::{Column, DeliveryFormat};
use sluice_merge::Entities;

use super::columns::{Cell, Table};

/// The encoded file: its bytes and its row count (entities).
pub struct Encoded {
    /// The file's content.
    pub bytes: Vec<u8>,
    /// Entities written.
    pub rows: usize,
    /// With configured columns: values written as null because they were not of their
    /// column's type (`columns`).
    pub mismatched: Option<u64>,
}

/// `entities` in `format` (Parquet: `columnar`), with the configured `columns` (CSV and
/// Parquet; `None`: inferred). CPU-bound in the state's size: call it off the async workers.
/// Only Parquet can fail (an error of the parquet crate's writer).
pub fn encode(
    entities: &Entities,
    format: DeliveryFormat,
    columns: Option<&[Column]>,
) -> Result<Encoded, ::parquet::errors::ParquetError> {
    let mut mismatched = None;
    let bytes = match (format, columns) {
        (DeliveryFormat::Jsonl, _) => jsonl(entities),
        (DeliveryFormat::Csv, None) => csv(entities),
        (DeliveryFormat::Parquet, None) => super::columnar::parquet(entities)?,
        (DeliveryFormat::Csv, Some(columns)) => {
            let table = super::columns::table(entities, columns);
            mismatched = Some(table.mismatched);
            csv_table(&table, columns)
        }
        (DeliveryFormat::Parquet, Some(columns)) => {
            let table = super::columns::table(entities, columns);
            mismatched = Some(table.mismatched);
            super::columnar::parquet_table(&table, columns)?
        }
    };
    Ok(Encoded {
        bytes,
        rows: entities.len(),
        mismatched,
    })
}

/// A CSV of configured columns: `key`, then each column's name; a null cell is empty.
fn csv_table(table: &Table<'_>, columns: &[Column]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = std::iter::once("key").chain(columns.iter().map(|c| c.name.as_str()));
    row(&mut out, header.map(std::borrow::Cow::Borrowed));
    for (key, cells) in &table.rows {
        let text = cells.iter().map(|cell| -> std::borrow::Cow<'_, str> {
            match cell {
                Cell::Null => "".into(),
                Cell::Text(s) => s.as_str().into(),
                Cell::Int(n) => n.to_string().into(),
                Cell::Float(x) => x.to_string().into(),
                Cell::Bool(b) => if *b { "true" } else { "false" }.into(),
            }
        });
        row(&mut out, std::iter::once((*key).into()).chain(text));
    }
    out
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
        let out = encode(&e, DeliveryFormat::Jsonl, None).unwrap();
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
        let out = encode(&e, DeliveryFormat::Csv, None).unwrap();
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
        let out = encode(&e, DeliveryFormat::Csv, None).unwrap();
        assert_eq!(
            String::from_utf8(out.bytes).unwrap(),
            "key,_value,f\na,7,\nb,,x\n"
        );
    }

    #[test]
    fn an_entity_field_named_key_goes_in_its_own_column() {
        let e = entities(&[("a", json!({"key": "a", "n": 1}))]);
        let out = encode(&e, DeliveryFormat::Csv, None).unwrap();
        assert_eq!(String::from_utf8(out.bytes).unwrap(), "key,_key,n\na,a,1\n");
    }

    #[test]
    fn csv_with_configured_columns_has_exactly_them_typed_and_counts_mismatches() {
        use sluice_config::ColumnType;
        let e = entities(&[
            ("a", json!({"p": 1.5, "v": {"n": "x, y"}, "q": 2})),
            ("b", json!({"p": "n/a", "q": 7})),
        ]);
        let columns = [
            Column {
                name: "price".to_owned(),
                pointer: "/p".to_owned(),
                kind: ColumnType::Float64,
            },
            Column {
                name: "venue".to_owned(),
                pointer: "/v/n".to_owned(),
                kind: ColumnType::String,
            },
            Column {
                name: "qty".to_owned(),
                pointer: "/q".to_owned(),
                kind: ColumnType::Int64,
            },
        ];
        let out = encode(&e, DeliveryFormat::Csv, Some(&columns)).unwrap();
        assert_eq!(
            String::from_utf8(out.bytes).unwrap(),
            "key,price,venue,qty\na,1.5,\"x, y\",2\nb,,,7\n"
        );
        assert_eq!(out.mismatched, Some(1), "n/a in a float64 column");
        assert_eq!(
            encode(&e, DeliveryFormat::Csv, None).unwrap().mismatched,
            None
        );
    }

    #[test]
    fn an_empty_state_is_an_empty_jsonl_file_and_a_csv_header() {
        let e = Entities::default();
        assert!(
            encode(&e, DeliveryFormat::Jsonl, None)
                .unwrap()
                .bytes
                .is_empty()
        );
        assert_eq!(
            encode(&e, DeliveryFormat::Csv, None).unwrap().bytes,
            b"key\n"
        );
    }
}
