//! `Text`: cheaply clonable UTF-8 text backed by `bytes::Bytes`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::str::Utf8Error;

use bytes::Bytes;

/// Cheaply clonable UTF-8 text backed by [`Bytes`].
///
/// Invariant: the bytes are always valid UTF-8. Every constructor either takes a `str`/`String` or
/// validates, so [`Text::as_str`] never re-checks. Cloning is a reference-count increment; the
/// parser hands out slices of its input buffer without copying. Short texts (up to
/// [`Text::INLINE_CAPACITY`] bytes, such as typical ids and event types) may be stored inline
/// instead, which avoids reference counting; [`Text::into_bytes`] then copies them.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    /// Valid UTF-8 in `buf[..len]`.
    Inline {
        len: u8,
        buf: [u8; Text::INLINE_CAPACITY],
    },
    /// Valid UTF-8, usually a slice of the parser's input.
    Shared(Bytes),
}

impl Text {
    /// Longest text the parser stores inline rather than as a shared slice.
    pub const INLINE_CAPACITY: usize = 22;

    /// The empty text.
    pub const fn new() -> Text {
        Text(Repr::Shared(Bytes::new()))
    }

    /// Text pointing at a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Text {
        Text(Repr::Shared(Bytes::from_static(s.as_bytes())))
    }

    /// Text holding a copy of `s`.
    pub fn copy_from_str(s: &str) -> Text {
        Text::inline(s.as_bytes())
            .unwrap_or_else(|| Text(Repr::Shared(Bytes::copy_from_slice(s.as_bytes()))))
    }

    /// Validates `bytes` as UTF-8 and wraps them without copying.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Text, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(Repr::Shared(bytes)))
    }

    /// Decodes `bytes` as the WHATWG UTF-8 decoder does: zero-copy when they are valid UTF-8,
    /// otherwise a copy with each maximal invalid subpart replaced by U+FFFD.
    pub fn from_utf8_lossy(bytes: Bytes) -> Text {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Text(Repr::Shared(bytes)),
            Err(_) => Text::from(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// Wraps bytes the caller has already validated (or built from valid UTF-8 parts).
    #[inline]
    pub(crate) fn from_validated(bytes: Bytes) -> Text {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Text(Repr::Shared(bytes))
    }

    /// Copies already validated bytes inline, if they fit.
    #[inline]
    pub(crate) fn inline_validated(bytes: &[u8]) -> Option<Text> {
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        Text::inline(bytes)
    }

    /// Overwrites this text with already validated `bytes` in place when both are inline-sized;
    /// returns false (and leaves `self` unchanged) otherwise.
    #[inline]
    pub(crate) fn overwrite_inline_validated(&mut self, bytes: &[u8]) -> bool {
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        match &mut self.0 {
            Repr::Inline { len, buf } if bytes.len() <= Text::INLINE_CAPACITY => {
                buf[..bytes.len()].copy_from_slice(bytes);
                *len = bytes.len() as u8;
                true
            }
            _ => false,
        }
    }

    /// Copies `bytes` (valid UTF-8, checked by every caller) inline, if they fit.
    #[inline]
    fn inline(bytes: &[u8]) -> Option<Text> {
        let mut buf = [0u8; Text::INLINE_CAPACITY];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Text(Repr::Inline {
            len: bytes.len() as u8,
            buf,
        }))
    }

    /// The text as a string slice.
    #[allow(unsafe_code)]
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `Text` stores bytes that are valid UTF-8: `new`,
        // `from_static`, `copy_from_str` and the `From<&'static str>` / `From<String>` impls take
        // `str` data; `try_from_bytes` and `from_utf8_lossy` keep the original bytes only after
        // `std::str::from_utf8` accepted them; the crate-private `from_validated` and
        // `inline_validated` are only called by the parser with bytes it validated (or LF-joined
        // parts that were each validated) and re-check in debug builds. The field is private and
        // `Bytes` is immutable; the inline buffer is only rewritten by the crate-private
        // `overwrite_inline_validated`, through `&mut self`, with validated bytes and the matching
        // length, so no `&str` can observe a partial or invalid state.
        unsafe { std::str::from_utf8_unchecked(self.as_bytes()) }
    }

    /// The UTF-8 bytes of the text.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// The underlying bytes: no copy for shared text, a copy for short inline text.
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Inline { len, buf } => Bytes::copy_from_slice(&buf[..usize::from(len)]),
            Repr::Shared(bytes) => bytes,
        }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Inline { len, .. } => usize::from(*len),
            Repr::Shared(bytes) => bytes.len(),
        }
    }

    /// True when the text is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Text {
    fn default() -> Text {
        Text::new()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hash as `str` does so that `Borrow<str>` lookups in hash maps agree.
impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::from_static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Repr::Shared(Bytes::from(s)))
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Bytes {
        t.into_bytes()
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_decoding_keeps_valid_bytes_without_copy() {
        let bytes = Bytes::from_static("héllo".as_bytes());
        let text = Text::from_utf8_lossy(bytes.clone());
        assert_eq!(text.as_bytes().as_ptr(), bytes.as_ptr());
        assert_eq!(text, "héllo");
    }

    #[test]
    fn lossy_decoding_replaces_each_maximal_subpart() {
        let text = Text::from_utf8_lossy(Bytes::from_static(b"a\xF0\x9F\x98b\xFFc"));
        assert_eq!(text, "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn invalid_bytes_are_rejected_by_checked_constructor() {
        assert!(Text::try_from_bytes(Bytes::from_static(b"\xC3")).is_err());
    }

    #[test]
    fn inline_and_shared_texts_compare_and_hash_by_content() {
        use std::collections::hash_map::DefaultHasher;
        let inline = Text::copy_from_str("abc");
        let shared = Text::from_utf8_lossy(Bytes::from_static(b"abc"));
        assert!(matches!(inline.0, Repr::Inline { .. }));
        assert!(matches!(shared.0, Repr::Shared(_)));
        assert_eq!(inline, shared);
        let hash = |t: &Text| {
            let mut h = DefaultHasher::new();
            t.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&inline), hash(&shared));
        assert_eq!(inline.clone().into_bytes(), shared.clone().into_bytes());
        let long = "x".repeat(Text::INLINE_CAPACITY + 1);
        assert_eq!(Text::copy_from_str(&long), long.as_str());
    }

    #[test]
    fn text_is_no_bigger_than_bytes_plus_a_word() {
        assert!(std::mem::size_of::<Text>() <= std::mem::size_of::<Bytes>() + 8);
    }

    #[test]
    fn debug_and_display_show_the_string() {
        let text = Text::from("a\"b");
        assert_eq!(format!("{text}"), "a\"b");
        assert_eq!(format!("{text:?}"), "\"a\\\"b\"");
    }
}
