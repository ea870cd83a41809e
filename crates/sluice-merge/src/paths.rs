//! A [`MergeSpec`]'s pointers, split once when a merger is built.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::MalformedError;
use crate::extract::{raw_digits, raw_tree};
use crate::pointer::Pointer;
use crate::spec::{MergeSpec, VersionSpec};
use crate::version::{Span, parse_version};

/// The pointers of one spec.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// To the base state's items.
    pub(crate) base_items: Pointer,
    /// Into a base item, to its key.
    pub(crate) base_key: Pointer,
    /// To the base state's version.
    pub(crate) base_version: Option<Pointer>,
    /// Into a delta, to its key.
    pub(crate) key: Pointer,
    /// Into a delta, to its entity or patch (`None`: the whole delta).
    pub(crate) value: Option<Pointer>,
    /// Into a delta, to its versions.
    pub(crate) version: Versions,
}

/// Where a delta's versions are.
#[derive(Debug, Clone)]
pub(crate) enum Versions {
    /// Nowhere: the target is unversioned.
    None,
    /// One version.
    Single(Pointer),
    /// A range.
    Range {
        /// Its first version.
        first: Pointer,
        /// Its last version.
        last: Pointer,
    },
}

impl Paths {
    /// Splits the pointers of `spec`.
    pub(crate) fn new(spec: &MergeSpec) -> Paths {
        Paths {
            base_items: Pointer::new(&spec.base_items),
            base_key: Pointer::new(&spec.base_key),
            base_version: spec.base_version.as_deref().map(Pointer::new),
            key: Pointer::new(&spec.key),
            value: spec.value.as_deref().map(Pointer::new),
            version: match &spec.version {
                VersionSpec::None => Versions::None,
                VersionSpec::Single(at) => Versions::Single(Pointer::new(at)),
                VersionSpec::Range { first, last } => Versions::Range {
                    first: Pointer::new(first),
                    last: Pointer::new(last),
                },
            },
        }
    }
}

impl Versions {
    /// Whether deltas carry versions.
    pub(crate) fn is_versioned(&self) -> bool {
        !matches!(self, Versions::None)
    }

    /// The versions the delta `data` covers (`None` for an unversioned target).
    pub(crate) fn read(&self, data: &Value) -> Result<Option<Span>, MalformedError> {
        self.span(|at, _| version(at, at.get(data).and_then(parse_version), at.get(data)))
    }

    /// The versions a delta covers, from the raw values its version pointers found (`None`
    /// for an unversioned target).
    pub(crate) fn read_raw(
        &self,
        first: Option<&RawValue>,
        last: Option<&RawValue>,
    ) -> Result<Option<Span>, MalformedError> {
        self.span(|at, slot| {
            let found = if slot == 0 { first } else { last };
            let parsed = found.and_then(|raw| {
                raw_digits(raw).or_else(|| raw_tree(raw).as_ref().and_then(parse_version))
            });
            version(at, parsed, found)
        })
    }

    /// The span, given how to read the version at each pointer (slot 0: the single or first
    /// version, slot 1: the last).
    fn span(
        &self,
        read: impl Fn(&Pointer, usize) -> Result<u64, MalformedError>,
    ) -> Result<Option<Span>, MalformedError> {
        match self {
            Versions::None => Ok(None),
            Versions::Single(at) => {
                let v = read(at, 0)?;
                Ok(Some(Span { first: v, last: v }))
            }
            Versions::Range { first, last } => {
                let span = Span {
                    first: read(first, 0)?,
                    last: read(last, 1)?,
                };
                if span.first > span.last {
                    return Err(MalformedError::BadVersion {
                        pointer: first.as_str().to_owned(),
                    });
                }
                Ok(Some(span))
            }
        }
    }
}

/// The version at `at`: `parsed` when the pointer `found` something that is a version.
fn version<T>(at: &Pointer, parsed: Option<u64>, found: Option<T>) -> Result<u64, MalformedError> {
    match (parsed, found) {
        (Some(v), _) => Ok(v),
        (None, Some(_)) => Err(MalformedError::BadVersion {
            pointer: at.as_str().to_owned(),
        }),
        (None, None) => Err(MalformedError::MissingVersion {
            pointer: at.as_str().to_owned(),
        }),
    }
}
