//! An entity's value: a parsed JSON tree where a strategy edits it, or the JSON text a `replace`
//! delta carried, kept as received so the hot path never builds (or frees) a tree for it.

use std::sync::Arc;

use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// One entity's current value, shared: cloning it (into a change, a snapshot, a response) copies
/// a pointer, and an edit copies the value only while someone else still holds it. Both forms
/// serialize to the same JSON; compare with [`Entity::to_value`] (the text form keeps the
/// sender's number spelling and spacing).
#[derive(Debug, Clone)]
pub enum Entity {
    /// Parsed: base-state items, restored snapshots, `merge_patch` and `json_patch` results.
    Tree(Arc<Value>),
    /// A `replace` delta's value: its JSON text as received (checked to be JSON when it was
    /// read; only [`Merger`](crate::Merger) builds this form).
    Text(Arc<str>),
}

impl Entity {
    /// The value as a JSON tree (a copy).
    pub fn to_value(&self) -> Value {
        match self {
            Entity::Tree(value) => Value::clone(value),
            Entity::Text(raw) => parse_text(raw),
        }
    }

    /// The tree to edit in place (copied first if it is shared); a text value is parsed into
    /// one first.
    pub(crate) fn tree_mut(&mut self) -> &mut Value {
        if let Entity::Text(raw) = self {
            *self = Entity::Tree(Arc::new(parse_text(raw)));
        }
        match self {
            Entity::Tree(value) => Arc::make_mut(value),
            // Replaced just above.
            Entity::Text(_) => unreachable!("text entity was just parsed into a tree"),
        }
    }
}

/// The tree of a text value. The text was checked by the same parser when it was read, so this
/// cannot fail; `Null` would only stand in if serde_json ever disagreed with itself.
fn parse_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl From<Value> for Entity {
    fn from(value: Value) -> Entity {
        Entity::Tree(Arc::new(value))
    }
}

impl PartialEq for Entity {
    fn eq(&self, other: &Entity) -> bool {
        match (self, other) {
            (Entity::Tree(a), Entity::Tree(b)) => a == b,
            _ => self.to_value() == other.to_value(),
        }
    }
}

impl PartialEq<Value> for Entity {
    fn eq(&self, other: &Value) -> bool {
        match self {
            Entity::Tree(value) => value.as_ref() == other,
            Entity::Text(_) => &self.to_value() == other,
        }
    }
}

impl Serialize for Entity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Entity::Tree(value) => value.serialize(serializer),
            // Written as it came (re-read, not re-built: a scan, no tree).
            Entity::Text(text) => serde_json::from_str::<&RawValue>(text)
                .map_err(S::Error::custom)?
                .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Entity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entity, D::Error> {
        Value::deserialize(deserializer).map(Entity::from)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::Entity;

    #[test]
    fn text_and_tree_serialize_alike_and_compare_by_value() {
        let text = Entity::Text(r#"{"b": 1.0, "a": [true]}"#.into());
        let tree = Entity::from(json!({"a": [true], "b": 1.0}));
        assert_eq!(text, tree);
        assert_eq!(text, json!({"a": [true], "b": 1.0}));
        assert_eq!(
            serde_json::to_string(&text).unwrap(),
            r#"{"b": 1.0, "a": [true]}"#
        );
        assert_eq!(
            serde_json::to_string(&tree).unwrap(),
            r#"{"a":[true],"b":1.0}"#
        );
    }

    #[test]
    fn editing_a_text_value_parses_it_once() {
        let mut entity = Entity::Text(r#"{"a":1}"#.into());
        entity.tree_mut()["b"] = json!(2);
        assert!(matches!(entity, Entity::Tree(_)));
        assert_eq!(entity, json!({"a": 1, "b": 2}));
    }
}
