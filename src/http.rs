//! HTTP plumbing that is neither SCIM nor Graph, shared by [`crate::scim`] and
//! [`crate::source::graph`]: the retry timing of one request ([`RetryPolicy`]: bounded
//! attempts, full-jitter exponential backoff), `Retry-After` parsing (delay-seconds or
//! HTTP-date), the strict percent-encoding set for path segments and query values, and
//! bounded reading of a response body ([`read_body`]: chunk by chunk, refused as soon as it
//! is larger than the bound, so an app or a tenant answering 50 MB never has it buffered whole).
//!
//! It owns timing, escaping and body bounds only. It must not send requests, know a
//! protocol's JSON or status policy (which statuses retry, what a long `Retry-After` or a
//! refused body means: each client decides), nor import any other module of the crate, so
//! that both clients can depend on it.

use std::fmt;
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

/// The default bound on one response body: 32 MiB (a SCIM page of 100 resources or a Graph
/// page of 999 users is a few MiB at most).
pub const DEFAULT_MAX_RESPONSE: u64 = 32 * MIB;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A number of bytes as people write it: `32 MiB`, `64 KiB`, `1 GiB`, else `1500000 bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
            .into_iter()
            .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        {
            Some((unit, name)) => write!(f, "{} {name}", n / unit),
            None => write!(f, "{n} bytes"),
        }
    }
}

/// A response body refused because it is larger than the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("response larger than {} ({})", Size(*limit), self.seen())]
pub struct TooLarge {
    /// The bound, in bytes.
    pub limit: u64,
    /// The body's `Content-Length`, when it already said the body is larger (nothing read).
    pub declared: Option<u64>,
    /// Bytes that had arrived when reading stopped (more than `limit`; 0 when refused on
    /// `Content-Length`).
    pub received: u64,
}

impl TooLarge {
    fn seen(&self) -> String {
        match self.declared {
            Some(n) => format!("Content-Length: {n} bytes"),
            None => format!("more than {} bytes arrived", self.limit),
        }
    }
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the bound; the rest of it was not read.
    #[error(transparent)]
    TooLarge(TooLarge),
    /// The transport failed while the body was read (reset, timeout, bad chunking).
    #[error("reading the response body failed: {0}")]
    Read(#[source] reqwest::Error),
}

/// Reads `resp`'s body, at most `limit` bytes of it, chunk by chunk.
///
/// A `Content-Length` above `limit` is refused before anything is read; a body without one
/// (chunked) or longer than it said is refused as soon as more than `limit` bytes have
/// arrived. Either way the response is dropped unread, which closes its connection, and at
/// most `limit` bytes (plus one chunk in flight) were ever held.
///
/// # Errors
/// [`BodyError::TooLarge`] over the bound, [`BodyError::Read`] when the transport fails.
pub async fn read_body(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    let declared = resp.content_length();
    if let Some(n) = declared
        && n > limit
    {
        return Err(BodyError::TooLarge(TooLarge {
            limit,
            declared: Some(n),
            received: 0,
        }));
    }
    // Bounded by `limit`, which the caller chose; a missing length starts small.
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        let received = (body.len() as u64).saturating_add(chunk.len() as u64);
        if received > limit {
            return Err(BodyError::TooLarge(TooLarge {
                limit,
                declared: None,
                received,
            }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use percent_encoding::utf8_percent_encode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-connection HTTP/1.1 server on loopback answering `head` then `parts`, each
    /// written separately (write errors ignored: the client may hang up early). Returns its
    /// URL and, when the connection ends, how many body bytes it managed to write.
    async fn answer_once(
        head: String,
        parts: Vec<Vec<u8>>,
    ) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = conn.read(&mut request).await;
            conn.write_all(head.as_bytes()).await.unwrap();
            let mut written = 0;
            for part in parts {
                if conn.write_all(&part).await.is_err() || conn.flush().await.is_err() {
                    break;
                }
                written += part.len();
            }
            written
        });
        (url, server)
    }

    async fn get(url: &str) -> reqwest::Response {
        reqwest::Client::new().get(url).send().await.unwrap()
    }

    fn chunked(body_parts: usize, part: usize) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..body_parts)
            .map(|_| {
                let mut c = format!("{part:x}\r\n").into_bytes();
                c.extend(std::iter::repeat_n(b'a', part));
                c.extend_from_slice(b"\r\n");
                c
            })
            .collect();
        out.push(b"0\r\n\r\n".to_vec());
        out
    }

    #[tokio::test]
    async fn a_body_within_the_bound_is_read_whole() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\n";
        let (url, _) = answer_once(head.into(), vec![b"0123456789".to_vec()]).await;
        assert_eq!(read_body(get(&url).await, 10).await.unwrap(), b"0123456789");

        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let (url, _) = answer_once(head.into(), chunked(4, 1024)).await;
        let body = read_body(get(&url).await, 4096).await.unwrap();
        assert_eq!(body.len(), 4096, "exactly the bound is accepted");
    }

    #[tokio::test]
    async fn a_content_length_over_the_bound_is_refused_before_reading() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1048577\r\n\r\n";
        let (url, _) = answer_once(head.into(), vec![vec![b'a'; 1024]]).await;
        let err = read_body(get(&url).await, 1024 * 1024).await.unwrap_err();
        let BodyError::TooLarge(t) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            t,
            TooLarge {
                limit: 1024 * 1024,
                declared: Some(1_048_577),
                received: 0
            }
        );
        assert_eq!(
            t.to_string(),
            "response larger than 1 MiB (Content-Length: 1048577 bytes)"
        );
    }

    /// A chunked body (no length) of 16 MiB against a 64 KiB bound: refused once past the
    /// bound, with the server still holding most of it unsent.
    #[tokio::test]
    async fn a_chunked_body_is_refused_as_soon_as_it_passes_the_bound() {
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let (url, server) = answer_once(head.into(), chunked(1024, 16 * 1024)).await;
        let err = read_body(get(&url).await, 64 * 1024).await.unwrap_err();
        let BodyError::TooLarge(t) = err else {
            panic!("{err:?}")
        };
        assert_eq!((t.limit, t.declared), (64 * 1024, None));
        assert!(
            t.received > 64 * 1024 && t.received <= 64 * 1024 + 16 * 1024,
            "stopped within one chunk of the bound: {t:?}"
        );
        assert_eq!(
            t.to_string(),
            "response larger than 64 KiB (more than 65536 bytes arrived)"
        );
        let written = server.await.unwrap();
        assert!(
            written < 8 * 1024 * 1024,
            "the rest was never read: {written}"
        );
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(Size(DEFAULT_MAX_RESPONSE).to_string(), "32 MiB");
        assert_eq!(Size(GIB).to_string(), "1 GiB");
        assert_eq!(Size(64 * KIB).to_string(), "64 KiB");
        assert_eq!(Size(100_000_000).to_string(), "100000000 bytes");
        assert_eq!(Size(0).to_string(), "0 bytes");
    }

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
