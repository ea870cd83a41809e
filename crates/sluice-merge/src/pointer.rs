//! JSON Pointers (RFC 6901), split into reference tokens once when a merger is built and then
//! walked for every delta without re-parsing the pointer text.

use serde_json::Value;

/// A JSON Pointer, split.
#[derive(Debug, Clone)]
pub(crate) struct Pointer {
    /// The pointer as configured, for error messages.
    text: String,
    /// The reference tokens, unescaped; `None` when the text is not a pointer (it matches nothing).
    tokens: Option<Box<[Token]>>,
}

/// One reference token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// The member name (`~1` and `~0` already decoded).
    pub(crate) name: Box<str>,
    /// The array index the token denotes, if it is one (`0` or digits without a leading zero).
    pub(crate) index: Option<usize>,
}

impl Pointer {
    /// Splits `text`. The empty pointer is the whole document; text that does not start with `/`
    /// is not a pointer and matches nothing (config validation rejects it before it gets here).
    pub(crate) fn new(text: &str) -> Pointer {
        let tokens = if text.is_empty() {
            Some(Box::default())
        } else {
            text.strip_prefix('/')
                .map(|rest| rest.split('/').map(Token::new).collect())
        };
        Pointer {
            text: text.to_owned(),
            tokens,
        }
    }

    /// The pointer as configured.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The reference tokens; `None` when the text is not a pointer (it matches nothing).
    pub(crate) fn tokens(&self) -> Option<&[Token]> {
        self.tokens.as_deref()
    }

    /// The value `self` points at in `root`.
    pub(crate) fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut at = root;
        for token in self.tokens.as_deref()? {
            at = match at {
                Value::Object(map) => map.get(&*token.name)?,
                Value::Array(items) => items.get(token.index?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// Moves the value `self` points at out of `root` (leaving `null` in its place).
    pub(crate) fn take(&self, root: &mut Value) -> Option<Value> {
        let mut at = root;
        for token in self.tokens.as_deref()? {
            at = match at {
                Value::Object(map) => map.get_mut(&*token.name)?,
                Value::Array(items) => items.get_mut(token.index?)?,
                _ => return None,
            };
        }
        Some(at.take())
    }
}

impl Token {
    fn new(raw: &str) -> Token {
        let name: Box<str> = if raw.contains('~') {
            raw.replace("~1", "/").replace("~0", "~").into()
        } else {
            raw.into()
        };
        let index = if name.as_ref() == "0" {
            Some(0)
        } else if !name.starts_with('0') && name.bytes().all(|b| b.is_ascii_digit()) {
            name.parse().ok()
        } else {
            None
        };
        Token { name, index }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::Pointer;

    #[test]
    fn walks_objects_and_arrays_like_serde_json() {
        let doc = json!({
            "a": {"b": [10, {"c": 3}]},
            "m~n": 1,
            "x/y": 2,
            "": 4,
            "01": 5,
        });
        for text in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/01",
            "/a/b/-",
            "/m~0n",
            "/x~1y",
            "/",
            "/01",
            "/zz",
            "/a/b/1/c/d",
            "/a/b/+1",
        ] {
            assert_eq!(Pointer::new(text).get(&doc), doc.pointer(text), "{text}");
        }
    }

    #[test]
    fn text_without_a_leading_slash_matches_nothing() {
        assert_eq!(Pointer::new("a").get(&json!({"a": 1})), None);
    }

    #[test]
    fn take_moves_the_subtree_out() {
        let mut doc = json!({"k": "x", "p": {"a": [1, 2]}});
        let taken = Pointer::new("/p/a").take(&mut doc).unwrap();
        assert_eq!(taken, json!([1, 2]));
        assert_eq!(doc, json!({"k": "x", "p": {"a": null}}));
        assert_eq!(Pointer::new("/q").take(&mut doc), None);
    }
}
