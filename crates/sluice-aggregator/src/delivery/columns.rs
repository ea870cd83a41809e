//! The configured columns of a CSV or Parquet delivery (`deliveries[].columns`): each entity's
//! value at each column's JSON Pointer, converted to the column's type. Pure: no I/O.
//!
//! A missing value or `null` is a null cell. A value that is not of its column's type (a
//! string in an `int64` column, a fraction or an integer beyond 64 bits in `int64`) is a null
//! cell too, and counted: the manifest's `mismatched`, so a reader learns that the schema and
//! the data disagree instead of finding a silently wrong column.

use serde_json::Value;
use sluice_config::{Column, ColumnType};
use sluice_merge::Entities;

/// One cell of a configured column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Every entity's cells, in key order, and the cells that did not fit their type.
pub struct Table<'a> {
    /// `(key, one cell per column)`.
    pub rows: Vec<(&'a str, Vec<Cell>)>,
    /// Values written as null because they were not of their column's type.
    pub mismatched: u64,
}

/// The cells of `columns` for each of `entities`.
pub fn table<'a>(entities: &'a Entities, columns: &[Column]) -> Table<'a> {
    let mut mismatched = 0;
    let rows = entities
        .iter()
        .map(|(key, entity)| {
            let value = entity.to_value();
            let cells = columns
                .iter()
                .map(|column| {
                    let (cell, fits) = convert(value.pointer(&column.pointer), column.kind);
                    mismatched += u64::from(!fits);
                    cell
                })
                .collect();
            (&**key, cells)
        })
        .collect();
    Table { rows, mismatched }
}

/// `value` as a cell of type `kind`, and whether it fit (a null or missing value always does).
fn convert(value: Option<&Value>, kind: ColumnType) -> (Cell, bool) {
    let value = match value {
        None | Some(Value::Null) => return (Cell::Null, true),
        Some(value) => value,
    };
    let cell = match (kind, value) {
        (ColumnType::String, Value::String(s)) => Some(Cell::Text(s.clone())),
        (ColumnType::String | ColumnType::Json, other) => Some(Cell::Text(other.to_string())),
        (ColumnType::Int64, Value::Number(n)) => n.as_i64().map(Cell::Int),
        (ColumnType::Float64, Value::Number(n)) => n.as_f64().map(Cell::Float),
        (ColumnType::Boolean, Value::Bool(b)) => Some(Cell::Bool(*b)),
        _ => None,
    };
    match cell {
        Some(cell) => (cell, true),
        None => (Cell::Null, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(name: &str, pointer: &str, kind: ColumnType) -> Column {
        Column {
            name: name.to_owned(),
            pointer: pointer.to_owned(),
            kind,
        }
    }

    #[test]
    fn values_are_converted_to_their_column_type_and_the_ones_that_do_not_fit_are_counted() {
        let e = Entities::from_values([
            (
                "a".to_owned(),
                json!({"p": 1.5, "n": 3, "b": true, "v": {"name": "x"}, "s": "hi"}),
            ),
            (
                "b".to_owned(),
                json!({"p": "cheap", "n": 2.5, "b": "yes", "v": null, "s": [1]}),
            ),
        ]);
        let columns = [
            column("price", "/p", ColumnType::Float64),
            column("n", "/n", ColumnType::Int64),
            column("b", "/b", ColumnType::Boolean),
            column("venue", "/v/name", ColumnType::String),
            column("s", "/s", ColumnType::String),
            column("raw", "/s", ColumnType::Json),
            column("missing", "/nope", ColumnType::Int64),
        ];
        let t = table(&e, &columns);
        assert_eq!(
            t.rows,
            [
                (
                    "a",
                    vec![
                        Cell::Float(1.5),
                        Cell::Int(3),
                        Cell::Bool(true),
                        Cell::Text("x".to_owned()),
                        Cell::Text("hi".to_owned()),
                        Cell::Text("\"hi\"".to_owned()),
                        Cell::Null,
                    ]
                ),
                (
                    "b",
                    vec![
                        Cell::Null,
                        Cell::Null,
                        Cell::Null,
                        Cell::Null,
                        Cell::Text("[1]".to_owned()),
                        Cell::Text("[1]".to_owned()),
                        Cell::Null,
                    ]
                ),
            ]
        );
        // "cheap" in float64, 2.5 in int64, "yes" in boolean; null and missing fit.
        assert_eq!(t.mismatched, 3);
    }
}
