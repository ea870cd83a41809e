//! Reading a base-state document: the items become the entities (keyed by the base key, each the
//! whole item), and the document's version becomes the state's.

use std::sync::Arc;

use hashbrown::HashMap;
use hashbrown::hash_map::Entry;

use serde_json::Value;

use crate::entity::Entity;
use crate::error::BaseError;
use crate::key::read_key;
use crate::paths::Paths;
use crate::version::parse_version;

/// A parsed base state.
#[derive(Debug)]
pub(crate) struct Base {
    /// The entities by key.
    pub(crate) entities: HashMap<Arc<str>, Entity>,
    /// The base state's version (`None`: the target has no base version pointer).
    pub(crate) version: Option<u64>,
}

impl Base {
    /// Reads `body` by `paths`; more than `max_entities` items is an error.
    pub(crate) fn parse(
        paths: &Paths,
        body: &[u8],
        max_entities: usize,
    ) -> Result<Base, BaseError> {
        let mut doc: Value =
            serde_json::from_slice(body).map_err(|e| BaseError::NotJson(e.to_string()))?;
        let version = match &paths.base_version {
            None => None,
            Some(at) => Some(
                at.get(&doc)
                    .and_then(parse_version)
                    .ok_or_else(|| BaseError::Version(at.as_str().to_owned()))?,
            ),
        };
        let items = match paths.base_items.take(&mut doc) {
            Some(Value::Array(items)) => items,
            _ => return Err(BaseError::Items(paths.base_items.as_str().to_owned())),
        };
        if items.len() > max_entities {
            return Err(BaseError::TooManyEntities { max: max_entities });
        }
        let mut entities = HashMap::new();
        for (index, item) in items.into_iter().enumerate() {
            let key: Arc<str> = paths
                .base_key
                .get(&item)
                .and_then(read_key)
                .ok_or_else(|| BaseError::Key {
                    index,
                    pointer: paths.base_key.as_str().to_owned(),
                })?
                .into();
            match entities.entry(key) {
                Entry::Occupied(taken) => {
                    return Err(BaseError::DuplicateKey {
                        key: taken.key().to_string(),
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(Entity::from(item));
                }
            }
        }
        Ok(Base { entities, version })
    }
}
