//! A state version as a Parquet file, its schema inferred from the entities or configured
//! (`parquet_table`, see `columns`). Pure: no I/O, no clock (the file is built in memory).
//!
//! Columns: `key` (string, never null), then the union of the entities' top-level fields,
//! sorted, each typed by the values it holds: all booleans → boolean, all integers → int64,
//! all numbers → float64, anything else (strings, nested values, a mix) → string, strings as
//! they are and other values as JSON text; `null` and a missing field are null. An entity that
//! is not an object is JSON text in a `_value` column (present only when such an entity is);
//! an entity's own field `key` is the column `_key` (as in CSV).

use std::collections::BTreeMap;
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde_json::Value;
use sluice_config::{Column, ColumnType};
use sluice_merge::Entities;

use super::columns::{Cell, Table};
use super::format::{NON_OBJECT, column_name};

/// What a column's values allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only nulls so far.
    Null,
    Bool,
    Int,
    Float,
    Text,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_i64() => Kind::Int,
            Value::Number(_) => Kind::Float,
            _ => Kind::Text,
        }
    }

    /// The kind of a column holding values of both kinds.
    fn join(self, other: Kind) -> Kind {
        match (self, other) {
            (a, b) if a == b => a,
            (Kind::Null, k) | (k, Kind::Null) => k,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            _ => Kind::Text,
        }
    }
}

/// `entities` as a Parquet file (one row group). CPU-bound: call it off the async workers.
pub fn parquet(entities: &Entities) -> Result<Vec<u8>, ::parquet::errors::ParquetError> {
    let rows: Vec<(&str, Value)> = entities
        .iter()
        .map(|(key, entity)| (&**key, entity.to_value()))
        .collect();
    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    let mut non_object = false;
    for (_, value) in &rows {
        match value {
            Value::Object(map) => {
                for (field, v) in map {
                    let kind = kinds.entry(field.as_str()).or_insert(Kind::Null);
                    *kind = kind.join(Kind::of(v));
                }
            }
            _ => non_object = true,
        }
    }
    let mut fields = vec![Field::new("key", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        rows.iter().map(|(key, _)| *key),
    ))];
    if non_object {
        fields.push(Field::new(NON_OBJECT, DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter(rows.iter().map(
            |(_, v)| match v {
                Value::Object(_) => None,
                other => Some(other.to_string()),
            },
        ))));
    }
    for (name, kind) in &kinds {
        let cell = |v: &Value| v.get(name).filter(|c| !c.is_null()).cloned();
        let (data_type, column): (DataType, ArrayRef) = match kind {
            Kind::Bool => (
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|(_, v)| cell(v).and_then(|c| c.as_bool())),
                )),
            ),
            Kind::Int => (
                DataType::Int64,
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|(_, v)| cell(v).and_then(|c| c.as_i64())),
                )),
            ),
            Kind::Float => (
                DataType::Float64,
                Arc::new(Float64Array::from_iter(
                    rows.iter().map(|(_, v)| cell(v).and_then(|c| c.as_f64())),
                )),
            ),
            Kind::Null | Kind::Text => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter(rows.iter().map(|(_, v)| {
                    cell(v).map(|c| match c {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                }))),
            ),
        };
        fields.push(Field::new(column_name(name), data_type, true));
        columns.push(column);
    }
    write(fields, columns)
}

/// A Parquet file of configured columns: `key` (never null), then each column typed by its
/// configured type (`string` and `json`: string); a null cell is null.
pub fn parquet_table(
    table: &Table<'_>,
    columns: &[Column],
) -> Result<Vec<u8>, ::parquet::errors::ParquetError> {
    let mut fields = vec![Field::new("key", DataType::Utf8, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        table.rows.iter().map(|(key, _)| *key),
    ))];
    for (i, column) in columns.iter().enumerate() {
        let cells = table.rows.iter().map(|(_, cells)| &cells[i]);
        let (data_type, array): (DataType, ArrayRef) = match column.kind {
            ColumnType::Int64 => (
                DataType::Int64,
                Arc::new(Int64Array::from_iter(cells.map(|c| match c {
                    Cell::Int(n) => Some(*n),
                    _ => None,
                }))),
            ),
            ColumnType::Float64 => (
                DataType::Float64,
                Arc::new(Float64Array::from_iter(cells.map(|c| match c {
                    Cell::Float(x) => Some(*x),
                    _ => None,
                }))),
            ),
            ColumnType::Boolean => (
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(cells.map(|c| match c {
                    Cell::Bool(b) => Some(*b),
                    _ => None,
                }))),
            ),
            ColumnType::String | ColumnType::Json => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter(cells.map(|c| match c {
                    Cell::Text(s) => Some(s.as_str()),
                    _ => None,
                }))),
            ),
        };
        fields.push(Field::new(column.name.as_str(), data_type, true));
        arrays.push(array);
    }
    write(fields, arrays)
}

/// One row group of `arrays` under `fields`, as a Parquet file in memory.
fn write(
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
) -> Result<Vec<u8>, ::parquet::errors::ParquetError> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow_array::Array;
    use serde_json::json;

    #[test]
    fn columns_are_typed_by_their_values_and_read_back_with_the_parquet_crate() {
        let e = Entities::from_values([
            (
                "a".to_owned(),
                json!({"n": 1, "x": 1.5, "b": true, "s": "hi", "o": {"z": [1]}}),
            ),
            ("b".to_owned(), json!({"n": 2, "x": 2, "s": null, "m": 3})),
            ("c".to_owned(), json!(7)),
        ]);
        let bytes = parquet(&e).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        let schema = batch.schema();
        let names: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        assert_eq!(
            names,
            [
                ("key", &DataType::Utf8),
                ("_value", &DataType::Utf8),
                ("b", &DataType::Boolean),
                ("m", &DataType::Int64),
                ("n", &DataType::Int64),
                ("o", &DataType::Utf8),
                ("s", &DataType::Utf8),
                ("x", &DataType::Float64),
            ]
        );
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let keys = col("key");
        let keys = keys.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            [Some("a"), Some("b"), Some("c")]
        );
        let x = col("x");
        let x = x.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(x.iter().collect::<Vec<_>>(), [Some(1.5), Some(2.0), None]);
        let o = col("o");
        let o = o.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(o.value(0), r#"{"z":[1]}"#);
        assert!(o.is_null(1));
        let s = col("s");
        let s = s.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), [Some("hi"), None, None]);
        let v = col("_value");
        let v = v.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(v.iter().collect::<Vec<_>>(), [None, None, Some("7")]);
    }

    #[test]
    fn configured_columns_are_typed_as_configured_and_read_back() {
        use sluice_config::{Column, ColumnType};
        let e = Entities::from_values([
            ("a".to_owned(), json!({"p": 2, "v": {"n": "x"}})),
            ("b".to_owned(), json!({"p": "?", "ok": true})),
        ]);
        let columns = [
            Column {
                name: "price".to_owned(),
                pointer: "/p".to_owned(),
                kind: ColumnType::Float64,
            },
            Column {
                name: "venue".to_owned(),
                pointer: "/v".to_owned(),
                kind: ColumnType::Json,
            },
            Column {
                name: "ok".to_owned(),
                pointer: "/ok".to_owned(),
                kind: ColumnType::Boolean,
            },
        ];
        let table = crate::delivery::columns::table(&e, &columns);
        let bytes = parquet_table(&table, &columns).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let types: Vec<&DataType> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        assert_eq!(
            types,
            [
                &DataType::Utf8,
                &DataType::Float64,
                &DataType::Utf8,
                &DataType::Boolean
            ]
        );
        let price = batch.column(1).clone();
        let price = price.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(price.iter().collect::<Vec<_>>(), [Some(2.0), None]);
        let venue = batch.column(2).clone();
        let venue = venue.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            venue.iter().collect::<Vec<_>>(),
            [Some(r#"{"n":"x"}"#), None]
        );
        let ok = batch.column(3).clone();
        let ok = ok.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!(ok.iter().collect::<Vec<_>>(), [None, Some(true)]);
        assert_eq!(table.mismatched, 1, "\"?\" in float64");
    }
}
