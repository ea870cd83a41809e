//! Versions: how they are read, and where a delta's versions stand against the state's.

use serde_json::Value;

/// The version `value` denotes: a JSON number that is a non-negative integer, or a string of
/// decimal digits, within `u64`.
pub(crate) fn parse_version(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// The versions one delta covers (`first == last` for a single version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The first version covered.
    pub(crate) first: u64,
    /// The last version covered; the state's version after the delta is applied.
    pub(crate) last: u64,
}

/// Where a delta stands against the state's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// It brings news: apply it.
    Apply,
    /// Everything it covers is already in the state.
    Old,
    /// Versions between the state and the delta are missing.
    Gap,
}

impl Span {
    /// Where `self` stands against the state's version `current` (`None`: the state has no
    /// version yet, so anything applies). Contiguous: `last <= current` is old, `first <=
    /// current + 1` applies (a range may straddle the state, as Binance's first delta after a
    /// snapshot does), anything later is a gap. Not contiguous: only `last > current` matters.
    pub(crate) fn order(self, current: Option<u64>, contiguous: bool) -> Order {
        let Some(current) = current else {
            return Order::Apply;
        };
        if self.last <= current {
            Order::Old
        } else if !contiguous || self.first <= current.saturating_add(1) {
            Order::Apply
        } else {
            Order::Gap
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Order, Span, parse_version};

    #[test]
    fn versions_are_non_negative_integers_or_digit_strings() {
        let cases = [
            (json!(0), Some(0)),
            (json!(17), Some(17)),
            (json!(u64::MAX), Some(u64::MAX)),
            (json!("42"), Some(42)),
            (json!("007"), Some(7)),
            (json!("18446744073709551615"), Some(u64::MAX)),
            (json!("18446744073709551616"), None),
            (json!(""), None),
            (json!("-1"), None),
            (json!("+1"), None),
            (json!("1.0"), None),
            (json!(" 1"), None),
            (json!(-1), None),
            (json!(1.0), None),
            (json!(1.5), None),
            (json!(null), None),
            (json!(true), None),
            (json!([1]), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_version(&value), expected, "{value}");
        }
    }

    #[test]
    fn contiguous_order_follows_the_order_book_rule() {
        let span = |first, last| Span { first, last };
        let cases = [
            // (delta, state, expected)
            (span(5, 5), None, Order::Apply),
            (span(10, 10), Some(10), Order::Old),
            (span(9, 9), Some(10), Order::Old),
            (span(11, 11), Some(10), Order::Apply),
            (span(12, 12), Some(10), Order::Gap),
            (span(3, 10), Some(10), Order::Old),
            (span(3, 11), Some(10), Order::Apply),
            (span(11, 20), Some(10), Order::Apply),
            (span(12, 20), Some(10), Order::Gap),
            (span(u64::MAX, u64::MAX), Some(u64::MAX - 1), Order::Apply),
        ];
        for (delta, state, expected) in cases {
            assert_eq!(delta.order(state, true), expected, "{delta:?} on {state:?}");
        }
    }

    #[test]
    fn non_contiguous_order_only_needs_a_newer_last_version() {
        let span = |first, last| Span { first, last };
        assert_eq!(span(50, 50).order(Some(10), false), Order::Apply);
        assert_eq!(span(10, 10).order(Some(10), false), Order::Old);
        assert_eq!(span(30, 40).order(Some(10), false), Order::Apply);
        assert_eq!(span(3, 9).order(Some(10), false), Order::Old);
    }
}
