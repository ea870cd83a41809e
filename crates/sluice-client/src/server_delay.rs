//! The delays a server may ask a client to wait: the stream's `retry:` field (the reconnection
//! time) and `Retry-After` on a 429 or 503, each bounded by [`MAX_SERVER_DELAY`], so a hostile or
//! mistaken value (`retry: 99999999999`, `Retry-After: 18446744073709551615`) can neither
//! overflow deadline arithmetic (a panic) nor park a target for years.
//!
//! Pure: the clock an HTTP date is compared with is the caller's. What it must NOT do: decide
//! backoff (see [`crate::backoff`]) or when to reconnect (see [`crate::reconnect`]).

use std::time::{Duration, SystemTime};

/// The longest delay a server can impose: one hour. A server that wants clients away for longer
/// gets asked again every hour, which costs it one request per client per hour.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(60 * 60);

/// The reconnection time a `retry:` field of `ms` milliseconds sets, at most
/// [`MAX_SERVER_DELAY`].
pub fn reconnection_time(ms: u64) -> Duration {
    Duration::from_millis(ms).min(MAX_SERVER_DELAY)
}

/// Parses `Retry-After` as delta-seconds or an HTTP date (RFC 9110 section 10.2.3), at most
/// [`MAX_SERVER_DELAY`]; a date in the past is zero. `None` when it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        // All digits but past u64: longer than any bound.
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            MAX_SERVER_DELAY
        }
        Err(_) => {
            let when = httpdate::parse_http_date(value).ok()?;
            when.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_SERVER_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:20:00 GMT", now),
            Some(Duration::from_secs(200))
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("", now), None);
    }

    #[test]
    fn retry_after_is_at_most_an_hour_however_it_is_written() {
        let now = UNIX_EPOCH;
        for value in [
            "3601",
            "18446744073709551615",
            "99999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(retry_after(value, now), Some(MAX_SERVER_DELAY), "{value}");
        }
        assert_eq!(retry_after("3600", now), Some(MAX_SERVER_DELAY));
    }

    #[test]
    fn a_retry_field_is_at_most_an_hour() {
        assert_eq!(reconnection_time(0), Duration::ZERO);
        assert_eq!(reconnection_time(1_500), Duration::from_millis(1_500));
        assert_eq!(reconnection_time(3_600_001), MAX_SERVER_DELAY);
        assert_eq!(reconnection_time(u64::MAX), MAX_SERVER_DELAY);
    }
}
