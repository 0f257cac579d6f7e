//! HTTP plumbing that is neither SCIM nor Graph, shared by [`crate::scim`] and
//! [`crate::source::graph`]: the retry timing of one request ([`RetryPolicy`]: bounded
//! attempts, full-jitter exponential backoff), `Retry-After` parsing (delay-seconds or
//! HTTP-date), and the strict percent-encoding set for path segments and query values.
//!
//! It owns timing and escaping only. It must not send requests, know a protocol's JSON or
//! status policy (which statuses retry, what a long `Retry-After` means: each client decides),
//! nor import any other module of the crate, so that both clients can depend on it.

use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Query-string and path-segment escaping: everything but RFC 3986 unreserved characters,
/// so a space is `%20` (never `+`), and `"`, `\`, `&`, `=`, `/` are escaped.
pub(crate) const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bounded retries of one request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (default 5).
    pub max_attempts: u32,
    /// First backoff ceiling; doubles each attempt, full jitter (default 200 ms).
    pub base_backoff: Duration,
    /// Largest backoff ceiling (default 10 s).
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured (default 120 s); a longer one fails the request
    /// instead of stalling the cycle.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before retry number `attempt + 1`: uniform in
    /// `[0, min(max_backoff, base_backoff · 2^attempt)]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max_backoff);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// `Retry-After` as delay-seconds (integer, or decimal from lenient apps) or an HTTP-date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use percent_encoding::utf8_percent_encode;

    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let got = parse_retry_after(&later).unwrap_or_default();
        assert!(got > Duration::from_secs(28) && got <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn strict_escaping_never_uses_plus() {
        let q = utf8_percent_encode(r#"userName eq "o\"b+r&x""#, STRICT).to_string();
        assert_eq!(q, "userName%20eq%20%22o%5C%22b%2Br%26x%22");
    }
}
