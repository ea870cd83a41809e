//! Reading one delta for the merger: its versions, its entity's key and what it asks of the
//! entity, from its text in one pass (`replace`) or from its parsed tree (the patch
//! strategies). Reads only; it must not touch the state.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::Merger;
use crate::error::MalformedError;
use crate::extract;
use crate::key::read_key;
use crate::paths::Versions;
use crate::spec::Strategy;
use crate::version::Span;

/// A delta, read: its versions, its entity's key and what it asks of the entity.
pub(super) struct Delta<'d> {
    pub(super) span: Option<Span>,
    pub(super) key: Cow<'d, str>,
    pub(super) content: Content,
}

/// What a delta asks of its entity, read from its data.
pub(super) enum Content {
    Delete,
    /// The value's JSON text as received.
    Replace(Arc<str>),
    MergePatch(Value),
    JsonPatch(json_patch::Patch),
}

impl Merger {
    /// Reads a delta in one pass over its text, keeping the value as text.
    pub(super) fn read_text<'d>(
        &self,
        data: &'d [u8],
        delete: bool,
    ) -> Result<Delta<'d>, MalformedError> {
        let text = std::str::from_utf8(data).map_err(|e| MalformedError::NotJson(e.to_string()))?;
        let (first, last) = match &self.paths.version {
            Versions::None => (None, None),
            Versions::Single(at) => (Some(at), None),
            Versions::Range { first, last } => (Some(first), Some(last)),
        };
        let value_at = if delete {
            None
        } else {
            self.paths.value.as_ref()
        };
        let [key_raw, value_raw, first_raw, last_raw] =
            extract::find(text, [Some(&self.paths.key), value_at, first, last])
                .map_err(|e| MalformedError::NotJson(e.to_string()))?;
        let span = self.paths.version.read_raw(first_raw, last_raw)?;
        let key = self.key(key_raw.map(extract::raw_key))?;
        let content = if delete {
            Content::Delete
        } else {
            // Without a value pointer the entity is the whole delta, which the pass checked.
            let value = match value_at {
                Some(_) => value_raw.map(RawValue::get),
                None => Some(text.trim_matches(JSON_SPACE)),
            };
            Content::Replace(value.ok_or_else(|| self.bad_value())?.into())
        };
        Ok(Delta { span, key, content })
    }

    /// Reads a delta by parsing it into a tree (the patch strategies need the value as one).
    pub(super) fn read_tree(
        &self,
        data: &[u8],
        delete: bool,
    ) -> Result<Delta<'static>, MalformedError> {
        let mut doc: Value =
            serde_json::from_slice(data).map_err(|e| MalformedError::NotJson(e.to_string()))?;
        let span = self.paths.version.read(&doc)?;
        let key = Cow::Owned(
            self.key(self.paths.key.get(&doc).map(read_key))?
                .into_owned(),
        );
        let content = if delete {
            Content::Delete
        } else {
            let value = match &self.paths.value {
                None => doc,
                Some(at) => at.take(&mut doc).ok_or_else(|| self.bad_value())?,
            };
            match self.spec.strategy {
                Strategy::Replace => Content::Replace(value.to_string().into()),
                Strategy::MergePatch => Content::MergePatch(value),
                Strategy::JsonPatch => Content::JsonPatch(
                    serde_json::from_value(value).map_err(|_| MalformedError::NotAPatch)?,
                ),
            }
        };
        Ok(Delta { span, key, content })
    }

    /// The entity key a delta's key pointer found (`None`: nothing; `Some(None)`: not a key).
    fn key<'k>(&self, found: Option<Option<Cow<'k, str>>>) -> Result<Cow<'k, str>, MalformedError> {
        match found {
            Some(Some(key)) => Ok(key),
            Some(None) => Err(MalformedError::BadKey {
                pointer: self.paths.key.as_str().to_owned(),
            }),
            None => Err(MalformedError::MissingKey {
                pointer: self.paths.key.as_str().to_owned(),
            }),
        }
    }

    /// The error of a delta whose value pointer finds nothing.
    fn bad_value(&self) -> MalformedError {
        MalformedError::BadValue {
            pointer: self
                .paths
                .value
                .as_ref()
                .map_or("", |at| at.as_str())
                .to_owned(),
        }
    }
}

/// JSON's insignificant whitespace (RFC 8259, section 2).
const JSON_SPACE: [char; 4] = [' ', '\t', '\n', '\r'];
