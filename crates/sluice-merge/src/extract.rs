//! Reading a delta's key, versions and value in one pass over its text, without building a JSON
//! tree: members no pointer asks for are skipped (still checked to be JSON), the ones asked for
//! are kept as borrowed raw JSON text.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::key::read_key;
use crate::pointer::{Pointer, Token};

/// How many pointers one pass reads: key, value, first version, last version.
pub(crate) const SLOTS: usize = 4;

/// What one pass found, by slot; `None`: that pointer matched nothing.
pub(crate) type Found<'de> = [Option<&'de RawValue>; SLOTS];

/// Reads `text`, which must be exactly one JSON document, and finds each of `wanted` in it.
pub(crate) fn find<'de>(
    text: &'de str,
    wanted: [Option<&Pointer>; SLOTS],
) -> Result<Found<'de>, serde_json::Error> {
    let mut wants = Wants::default();
    for (slot, pointer) in wanted.iter().enumerate() {
        wants.0[slot] = pointer.and_then(|p| p.tokens());
    }
    let mut found = [None; SLOTS];
    let mut de = serde_json::Deserializer::from_str(text);
    Walk {
        wants,
        out: &mut found,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// The entity key a raw JSON value denotes (a string as is, an integer in decimal).
pub(crate) fn raw_key(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if let Some(inner) = plain_string(text) {
        // No escapes: the key is the text between the quotes (the pass checked it is JSON).
        Some(Cow::Borrowed(inner))
    } else if text.starts_with('"') {
        serde_json::from_str::<Name<'_>>(text).ok().map(|n| n.0)
    } else {
        let value: Value = serde_json::from_str(text).ok()?;
        read_key(&value).map(|k| Cow::Owned(k.into_owned()))
    }
}

/// The contents of a raw JSON string without escapes (`None` for anything else).
fn plain_string(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A version written as a plain integer, or as a string of digits, read without a parse (`None`:
/// read it through [`raw_tree`]).
pub(crate) fn raw_digits(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    let digits = plain_string(text).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A raw JSON value as a tree (for versions, which are scalars: no allocation for numbers).
pub(crate) fn raw_tree(raw: &RawValue) -> Option<Value> {
    serde_json::from_str(raw.get()).ok()
}

/// The remaining tokens of each pointer still being walked, by slot.
#[derive(Clone, Copy, Default)]
struct Wants<'p>([Option<&'p [Token]>; SLOTS]);

impl<'p> Wants<'p> {
    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Whether some pointer ends at the value being read.
    fn ends_here(&self) -> bool {
        self.0.iter().any(|w| w.is_some_and(<[Token]>::is_empty))
    }

    /// The pointers that go on into member `name`, one token further.
    fn member(&self, name: &str) -> Wants<'p> {
        self.step(|token| &*token.name == name)
    }

    /// The pointers that go on into element `index`, one token further.
    fn element(&self, index: usize) -> Wants<'p> {
        self.step(|token| token.index == Some(index))
    }

    fn step(&self, matches: impl Fn(&Token) -> bool) -> Wants<'p> {
        let mut next = Wants::default();
        for (slot, want) in self.0.iter().enumerate() {
            if let Some((token, rest)) = want.and_then(<[Token]>::split_first)
                && matches(token)
            {
                next.0[slot] = Some(rest);
            }
        }
        next
    }
}

/// Reads one value, recording what the wants find in it.
struct Walk<'p, 'o, 'de> {
    wants: Wants<'p>,
    out: &'o mut Found<'de>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.wants.is_empty() {
            IgnoredAny::deserialize(deserializer)?;
            return Ok(());
        }
        if !self.wants.ends_here() {
            return deserializer.deserialize_any(self);
        }
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let mut deeper = Wants::default();
        for (slot, want) in self.wants.0.iter().enumerate() {
            match want {
                Some([]) => self.out[slot] = Some(raw),
                Some(rest) => deeper.0[slot] = Some(rest),
                None => {}
            }
        }
        if !deeper.is_empty() {
            // A pointer below one that ends here (a key inside the value): walk the kept text.
            let mut inner = serde_json::Deserializer::from_str(raw.get());
            Walk {
                wants: deeper,
                out: self.out,
            }
            .deserialize(&mut inner)
            .map_err(D::Error::custom)?;
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Every member is read (a later duplicate wins, as in a parsed tree).
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            map.next_value_seed(Walk {
                wants: self.wants.member(&name),
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(Walk {
                wants: self.wants.element(index),
                out: &mut *self.out,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A member name or string, borrowed from the text when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name<'de>, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    use super::{SLOTS, find, raw_digits, raw_key, raw_tree};
    use crate::pointer::Pointer;

    /// What `find` returns, as trees, against what a parsed tree gives.
    fn check(doc: &str, pointers: [&str; SLOTS]) {
        let split: Vec<Pointer> = pointers.iter().map(|p| Pointer::new(p)).collect();
        let found = find(
            doc,
            [
                Some(&split[0]),
                Some(&split[1]),
                Some(&split[2]),
                Some(&split[3]),
            ],
        )
        .unwrap();
        let tree: Value = serde_json::from_str(doc).unwrap();
        for (slot, pointer) in split.iter().enumerate() {
            let got = found[slot].map(|raw| serde_json::from_str::<Value>(raw.get()).unwrap());
            assert_eq!(
                got.as_ref(),
                pointer.get(&tree),
                "{doc} {}",
                pointer.as_str()
            );
        }
    }

    #[test]
    fn finds_what_a_parsed_tree_finds() {
        let doc = r#" {"k": "x", "v": 7, "data": {"id": 3, "a": [1, {"b": null}], "m~n": 1, "x/y": 2, "": 4, "01": 5},
            "k": "last", "e\u0301": 9, "list": [[0, 1], [2, 3]]} "#;
        let sets = [
            ["/k", "/v", "", "/data"],
            ["/data/id", "/data", "/data/a/1/b", "/data/a/0"],
            ["/data/m~0n", "/data/x~1y", "/data/", "/data/01"],
            ["/e\u{301}", "/list/1/0", "/list/-", "/list/01"],
            ["/nope", "/k/0", "/data/a/2", "/v/x"],
            ["", "", "/list/0", "/list"],
        ];
        for pointers in sets {
            check(doc, pointers);
        }
        check("[1, [2, 3]]", ["/0", "/1/1", "/1", ""]);
        check("\"s\"", ["", "/a", "/0", ""]);
    }

    #[test]
    fn anything_but_one_json_document_is_refused() {
        let key = Pointer::new("/k");
        for doc in [
            "",
            "{",
            "{\"k\": 1} x",
            "{\"k\": tru}",
            "[1,]",
            "{\"a\": [}",
            "{\"k\":1}{}",
        ] {
            assert!(find(doc, [Some(&key), None, None, None]).is_err(), "{doc}");
        }
    }

    #[test]
    fn keys_are_strings_or_integers() {
        let doc = r#"{"a": "E1", "b": "e\"scaped", "c": 42, "d": -7, "e": 1.5, "f": true, "g": [1],
            "h": "", "i": "\u0045", "j": "tab\t", "k": "é"}"#;
        let tree: Value = serde_json::from_str(doc).unwrap();
        for name in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"] {
            let pointer = Pointer::new(&format!("/{name}"));
            let found = find(doc, [Some(&pointer), None, None, None]).unwrap();
            let expected = crate::key::read_key(&tree[name]).map(|k| k.into_owned());
            assert_eq!(
                raw_key(found[0].unwrap()).map(|k| k.into_owned()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn versions_read_without_a_parse_equal_the_parsed_ones() {
        let doc = r#"{"a": 0, "b": 42, "c": "17", "d": "", "e": -1, "f": 1.5, "g": 1e3,
            "h": 18446744073709551615, "i": 18446744073709551616, "j": "99999999999999999999",
            "k": "1\u0032", "l": " 3", "m": null, "n": [1], "o": "0x1"}"#;
        let tree: Value = serde_json::from_str(doc).unwrap();
        for name in [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o",
        ] {
            let pointer = Pointer::new(&format!("/{name}"));
            let raw = find(doc, [Some(&pointer), None, None, None]).unwrap()[0].unwrap();
            let expected = crate::version::parse_version(&tree[name]);
            let got = raw_digits(raw).or_else(|| {
                raw_tree(raw)
                    .as_ref()
                    .and_then(crate::version::parse_version)
            });
            assert_eq!(got, expected, "{name}");
        }
    }
}
