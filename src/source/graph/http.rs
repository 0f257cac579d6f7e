//! Reading Microsoft Graph over HTTP: authenticated GETs with throttling and fault handling,
//! and paged collections followed through `@odata.nextLink` (delta rounds too, ending with
//! their `@odata.deltaLink`).
//!
//! `429`, `502`, `503` and `504` wait `Retry-After` (capped at [`MAX_RETRY_AFTER`]) or a
//! jittered backoff when Graph sends none, and retry a bounded number of times; transport
//! errors (timeouts, resets) retry the same way. A `401` renews the token and retries once.
//! A request that finally fails is an [`Error`] naming what was read, the URL path, the
//! status and Graph's `error.code` and `error.message`; never the token. Callers fail the
//! whole snapshot on it: a page that cannot be read is never skipped.
//!
//! Every body is read up to a bound ([`crate::http::DEFAULT_MAX_RESPONSE`], 32 MiB: a page
//! of 999 users is a few MiB) with [`crate::http::read_body`]; a larger one is
//! [`Error::TooLarge`] at once, never buffered whole and never retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, RETRY_AFTER};
use serde_json::Value;
use tracing::{debug, warn};

use super::Error;
use super::auth::TokenSource;
use crate::http::{BodyError, DEFAULT_MAX_RESPONSE, RetryPolicy, parse_retry_after, read_body};

/// The longest `Retry-After` waited; a longer one is cut to this (Graph's own throttling
/// windows are seconds to a minute).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The retry policy of Graph reads: 5 attempts, backoff from 500 ms up to 30 s, and
/// `Retry-After` capped at [`MAX_RETRY_AFTER`].
pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
        max_retry_after: MAX_RETRY_AFTER,
    }
}

/// An authenticated Graph reader.
#[derive(Debug)]
pub struct GraphHttp {
    http: reqwest::Client,
    auth: TokenSource,
    retry: RetryPolicy,
    requests: AtomicU64,
    /// Largest body read, in bytes.
    max_response: AtomicU64,
}

impl GraphHttp {
    /// A reader sending with `http`, authenticated by `auth`, retrying by `retry`, reading
    /// bodies up to [`DEFAULT_MAX_RESPONSE`].
    pub fn new(http: reqwest::Client, auth: TokenSource, retry: RetryPolicy) -> Self {
        let mut retry = retry;
        retry.max_attempts = retry.max_attempts.max(1);
        GraphHttp {
            http,
            auth,
            retry,
            requests: AtomicU64::new(0),
            max_response: AtomicU64::new(DEFAULT_MAX_RESPONSE),
        }
    }

    /// Sets the largest body read, in bytes (at least 1; tests use a small one).
    pub fn set_max_response(&self, bytes: u64) {
        self.max_response.store(bytes.max(1), Ordering::Relaxed);
    }

    /// The retry policy of every request.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Graph requests sent so far (retries included; token requests excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// GETs `url` and returns its JSON body. `what` says what is read, for messages
    /// (`members of group 0c1f…`). `Ok(None)` on a `404` when `missing_ok`.
    ///
    /// # Errors
    /// [`Error::Status`], [`Error::Transport`], [`Error::Answer`] or [`Error::Auth`] once
    /// the retries are spent; [`Error::TooLarge`] at once.
    pub async fn get(
        &self,
        url: &str,
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<Value>, Error> {
        self.send(reqwest::Method::GET, url, None, what, missing_ok)
            .await
    }

    /// POSTs the JSON `body` to `url` (Graph's `$batch`) and returns its JSON answer, with
    /// the same authentication, retries and bounds as [`GraphHttp::get`].
    ///
    /// # Errors
    /// As [`GraphHttp::get`].
    pub async fn post(&self, url: &str, body: &Value, what: &str) -> Result<Value, Error> {
        Ok(self
            .send(reqwest::Method::POST, url, Some(body), what, false)
            .await?
            .unwrap_or_default())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        json: Option<&Value>,
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<Value>, Error> {
        let path = url_path(url);
        let limit = self.max_response.load(Ordering::Relaxed);
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let token = self.auth.token().await?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let answer = async {
                let mut req = self
                    .http
                    .request(method.clone(), url)
                    .bearer_auth(token.expose())
                    .header(ACCEPT, "application/json");
                if let Some(json) = json {
                    req = req.json(json);
                }
                let resp = req.send().await.map_err(Failed::Transport)?;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = read_body(resp, limit).await.map_err(|e| match e {
                    BodyError::TooLarge(body) => Failed::TooLarge(status, body),
                    BodyError::Read(e) => Failed::Transport(e),
                })?;
                Ok::<_, Failed>((status, retry_after, body))
            }
            .await;
            let (err, wait) = match answer {
                // Asking again would read it again: fail at once.
                Err(Failed::TooLarge(status, body)) => {
                    return Err(Error::TooLarge {
                        what: what.to_owned(),
                        path,
                        status,
                        body,
                    });
                }
                Err(Failed::Transport(e)) => {
                    let err = Error::Transport {
                        what: what.to_owned(),
                        path: path.clone(),
                        message: transport_message(e),
                    };
                    (err, self.retry.backoff(attempt))
                }
                Ok((status, retry_after, body)) => {
                    debug!(path = %path, status, attempt, "Graph request");
                    if (200..300).contains(&status) {
                        return serde_json::from_slice(&body).map(Some).map_err(|e| {
                            Error::Answer {
                                what: what.to_owned(),
                                path: path.clone(),
                                message: format!("the body is not JSON: {e}"),
                            }
                        });
                    }
                    if status == 404 && missing_ok {
                        return Ok(None);
                    }
                    if status == 401 && !renewed {
                        renewed = true;
                        self.auth.invalidate(&token).await;
                        continue;
                    }
                    let (code, mut message) = graph_error(&body);
                    if status == 403 {
                        message.push_str(
                            " (check that the app registration has the application permissions of docs/GRAPH.md, with admin consent)",
                        );
                    }
                    let err = Error::Status {
                        what: what.to_owned(),
                        path: path.clone(),
                        status,
                        code,
                        message,
                    };
                    if !matches!(status, 429 | 502 | 503 | 504) {
                        return Err(err);
                    }
                    let wait = retry_after
                        .map(|d| d.min(self.retry.max_retry_after))
                        .unwrap_or_else(|| self.retry.backoff(attempt));
                    (err, wait)
                }
            };
            attempt += 1;
            if attempt >= self.retry.max_attempts {
                return Err(err);
            }
            warn!(
                path = %path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %err,
                "retrying Graph request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// GETs a collection from `url` and every following page through `@odata.nextLink`
    /// (followed verbatim), and returns the `value` entries of all pages in order.
    ///
    /// # Errors
    /// The first page that fails, as [`GraphHttp::get`]; a page with no `value` array is
    /// [`Error::Answer`]. Never a partial list.
    pub async fn get_all(&self, url: String, what: &str) -> Result<Vec<Value>, Error> {
        Ok(self.get_pages(url, what).await?.0)
    }

    /// A delta round: GETs `url` (an initial delta query or a kept `@odata.deltaLink`) and
    /// every following page through `@odata.nextLink`, and returns the changes of all pages
    /// in order with the round's final `@odata.deltaLink`, the start of the next round.
    ///
    /// # Errors
    /// As [`GraphHttp::get_all`], and [`Error::Answer`] when the last page has no
    /// `@odata.deltaLink`. An expired delta token is the [`Error::Status`] Graph answered
    /// (see [`Error::needs_resync`]).
    pub async fn get_delta(&self, url: String, what: &str) -> Result<(Vec<Value>, String), Error> {
        let path = url_path(&url);
        match self.get_pages(url, what).await? {
            (items, Some(link)) => Ok((items, link)),
            (_, None) => Err(Error::Answer {
                what: what.to_owned(),
                path,
                message: "the last page has no \"@odata.deltaLink\"".into(),
            }),
        }
    }

    /// The pages from `url` on: every `value` entry, and the last page's
    /// `@odata.deltaLink` if any.
    async fn get_pages(
        &self,
        url: String,
        what: &str,
    ) -> Result<(Vec<Value>, Option<String>), Error> {
        let mut out = Vec::new();
        let mut next = Some(url);
        let mut page = 1usize;
        let mut delta_link = None;
        while let Some(url) = next.take() {
            let what_page = if page == 1 {
                what.to_owned()
            } else {
                format!("{what} (page {page})")
            };
            let mut body = self.get(&url, &what_page, false).await?.unwrap_or_default();
            match body.get_mut("value").map(Value::take) {
                Some(Value::Array(items)) => out.extend(items),
                _ => {
                    return Err(Error::Answer {
                        what: what_page,
                        path: url_path(&url),
                        message: "the answer has no \"value\" array".into(),
                    });
                }
            }
            let link = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
            next = link("@odata.nextLink");
            delta_link = link("@odata.deltaLink");
            page += 1;
        }
        Ok((out, delta_link))
    }
}

/// Why one attempt got no usable answer.
enum Failed {
    /// The request or the reading of its body failed in transport (retried).
    Transport(reqwest::Error),
    /// The answer (of this status) had a body over the bound (not retried).
    TooLarge(u16, crate::http::TooLarge),
}

/// The path of `url`, for messages: no query (it may be long and opaque), no host.
pub fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.path().to_owned())
}

/// `error.code` and `error.message` of a Graph error body, or the body's start.
fn graph_error(body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (code, message) = (field("code"), field("message"));
    if code.is_empty() && message.is_empty() {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        (String::new(), text)
    } else {
        (code, message)
    }
}

/// A transport error in words, without the URL (its query is noise) and with its cause.
pub fn transport_message(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_error_bodies_are_read() {
        let (code, message) = graph_error(
            br#"{"error":{"code":"TooManyRequests","message":"Please retry again later."}}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("TooManyRequests", "Please retry again later.")
        );
        assert_eq!(graph_error(b"bad gateway").1, "bad gateway");
        assert_eq!(
            url_path("https://graph.microsoft.com/v1.0/groups/g1/members?$skiptoken=X"),
            "/v1.0/groups/g1/members"
        );
    }
}
