//! Entity keys: a JSON string as is, or an integer rendered in decimal.

use std::borrow::Cow;

use serde_json::Value;

/// The entity key `value` denotes, if it is a string or an integer.
pub(crate) fn read_key(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(Cow::Owned(u.to_string()))
            } else {
                n.as_i64().map(|i| Cow::Owned(i.to_string()))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::read_key;

    #[test]
    fn strings_and_integers_are_keys_and_nothing_else_is() {
        let cases = [
            (json!("E0042"), Some("E0042")),
            (json!(""), Some("")),
            (json!(42), Some("42")),
            (json!(-7), Some("-7")),
            (json!(u64::MAX), Some("18446744073709551615")),
            (json!(1.5), None),
            (json!(true), None),
            (json!(null), None),
            (json!(["a"]), None),
            (json!({"a": 1}), None),
        ];
        for (value, expected) in cases {
            assert_eq!(read_key(&value).as_deref(), expected, "{value}");
        }
    }
}
