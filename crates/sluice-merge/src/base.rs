//! Reading a base-state document: the items become the entities (keyed by the base key, each the
//! whole item), and the document's version becomes the state's. A paginated base state is read
//! page by page into one: the version is the first page's (later pages' versions are not read),
//! a key twice on one page is an error, and a key on two pages keeps its later copy (it moved
//! while the pages were fetched; the later page was served later).

use std::sync::Arc;

use hashbrown::HashSet;
use imbl::OrdMap;

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
    pub(crate) entities: OrdMap<Arc<str>, Entity>,
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
        let mut base = Base {
            entities: OrdMap::new(),
            version: None,
        };
        base.add_page(paths, body, true, max_entities)?;
        Ok(base)
    }

    /// Reads the pages of one paginated base state, in the order they were fetched; an error
    /// names the page (1 is the first). At least one page is needed; more than `max_entities`
    /// entities in all is an error.
    pub(crate) fn parse_pages<P: AsRef<[u8]>>(
        paths: &Paths,
        pages: &[P],
        max_entities: usize,
    ) -> Result<Base, BaseError> {
        let [first, rest @ ..] = pages else {
            return Err(BaseError::NoPages);
        };
        if rest.is_empty() {
            return Base::parse(paths, first.as_ref(), max_entities);
        }
        let mut base = Base {
            entities: OrdMap::new(),
            version: None,
        };
        for (index, page) in pages.iter().enumerate() {
            base.add_page(paths, page.as_ref(), index == 0, max_entities)
                .map_err(|source| BaseError::Page {
                    page: index + 1,
                    source: Box::new(source),
                })?;
        }
        Ok(base)
    }

    /// Adds one page's items (and, from the first page, the version); the entities may not
    /// pass `max_entities`.
    fn add_page(
        &mut self,
        paths: &Paths,
        body: &[u8],
        first: bool,
        max_entities: usize,
    ) -> Result<(), BaseError> {
        let mut doc: Value =
            serde_json::from_slice(body).map_err(|e| BaseError::NotJson(e.to_string()))?;
        if first && let Some(at) = &paths.base_version {
            self.version = Some(
                at.get(&doc)
                    .and_then(parse_version)
                    .ok_or_else(|| BaseError::Version(at.as_str().to_owned()))?,
            );
        }
        let items = match paths.base_items.take(&mut doc) {
            Some(Value::Array(items)) => items,
            _ => return Err(BaseError::Items(paths.base_items.as_str().to_owned())),
        };
        if items.len() > max_entities {
            return Err(BaseError::TooManyEntities { max: max_entities });
        }
        let mut on_this_page: HashSet<Arc<str>> = HashSet::with_capacity(items.len());
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
            if !on_this_page.insert(key.clone()) {
                return Err(BaseError::DuplicateKey {
                    key: key.to_string(),
                });
            }
            // On an earlier page too: the entity moved while paging, and this copy is newer.
            self.entities.insert(key, Entity::from(item));
            if self.entities.len() > max_entities {
                return Err(BaseError::TooManyEntities { max: max_entities });
            }
        }
        Ok(())
    }
}
