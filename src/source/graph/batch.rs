//! JSON batching (`POST /v1.0/$batch`, graph-pim-facts §4): many GETs of the same kind in
//! requests of at most [`PER_BATCH`], for the per-group PIM reads (eligibility in every
//! snapshot, assignment instances in every poller round).
//!
//! Each answer in a batch stands on its own: a `200` is that read's first page (further
//! pages are followed with plain GETs through `@odata.nextLink`); a `429`, `502`, `503` or
//! `504` is retried, with the others still pending, in a new batch after the longest
//! `Retry-After` of the batch (capped, or a jittered backoff when none is given), a bounded
//! number of times; any other status is that read's [`Error::Status`]. Answers are matched to
//! requests by `id`, whatever their order.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::Error;
use super::http::{GraphHttp, url_path};
use crate::http::parse_retry_after;

/// Graph's limit of requests in one batch.
pub const PER_BATCH: usize = 20;

/// Batches in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;

impl GraphHttp {
    /// GETs every `(path, what)` of `reads` (paths relative to `{root}/v1.0`, e.g.
    /// `/identityGovernance/…?$filter=…`) in batches, and returns each read's `value`
    /// entries (all pages), in the order of `reads`.
    pub async fn get_all_batched(
        &self,
        root: &str,
        reads: Vec<(String, String)>,
    ) -> Vec<Result<Vec<Value>, Error>> {
        let n = reads.len();
        let chunks: Vec<Vec<(usize, String, String)>> = reads
            .into_iter()
            .enumerate()
            .map(|(i, (path, what))| (i, path, what))
            .collect::<Vec<_>>()
            .chunks(PER_BATCH)
            .map(<[_]>::to_vec)
            .collect();
        let mut out: Vec<Option<Result<Vec<Value>, Error>>> = (0..n).map(|_| None).collect();
        let mut done = futures::stream::iter(chunks)
            .map(|chunk| self.one_batch(root, chunk))
            .buffer_unordered(BATCHES_IN_FLIGHT);
        while let Some(results) = done.next().await {
            for (i, r) in results {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Answer {
                        what: "a batched read".into(),
                        path: "/v1.0/$batch".into(),
                        message: "no answer".into(),
                    })
                })
            })
            .collect()
    }

    /// One batch of at most [`PER_BATCH`] reads, with its retries.
    async fn one_batch(
        &self,
        root: &str,
        chunk: Vec<(usize, String, String)>,
    ) -> Vec<(usize, Result<Vec<Value>, Error>)> {
        let url = format!("{root}/v1.0/$batch");
        let mut pending: BTreeMap<String, (usize, String, String)> = chunk
            .into_iter()
            .map(|(i, path, what)| (i.to_string(), (i, path, what)))
            .collect();
        let mut out = Vec::new();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let body = json!({
                "requests": pending
                    .iter()
                    .map(|(id, (_, path, _))| json!({"id": id, "method": "GET", "url": path}))
                    .collect::<Vec<_>>()
            });
            let answer = match self.post(&url, &body, "a batch of PIM reads").await {
                Ok(a) => a,
                Err(e) => {
                    // The batch itself failed after its retries: every read in it did.
                    let message = e.to_string();
                    for (_, (i, path, what)) in std::mem::take(&mut pending) {
                        out.push((
                            i,
                            Err(Error::Answer {
                                what,
                                path: url_path(&path),
                                message: message.clone(),
                            }),
                        ));
                    }
                    break;
                }
            };
            let mut wait: Option<Duration> = None;
            let mut throttled = BTreeMap::new();
            let responses = answer["responses"].as_array().cloned().unwrap_or_default();
            for r in responses {
                let Some(id) = r["id"].as_str().map(str::to_owned) else {
                    continue;
                };
                let Some((i, path, what)) = pending.remove(&id) else {
                    continue;
                };
                let status = r["status"].as_u64().unwrap_or(0) as u16;
                if (200..300).contains(&status) {
                    out.push((i, self.first_page(&r["body"], &path, &what).await));
                } else if matches!(status, 429 | 502 | 503 | 504)
                    && attempt + 1 < self.retry_policy().max_attempts
                {
                    let after = header(&r["headers"], "retry-after").and_then(parse_retry_after);
                    wait = wait.max(after.or(Some(self.retry_policy().backoff(attempt))));
                    throttled.insert(id, (i, path, what));
                } else {
                    let (code, message) = graph_error_of(&r["body"]);
                    out.push((
                        i,
                        Err(Error::Status {
                            what,
                            path: url_path(&path),
                            status,
                            code,
                            message,
                        }),
                    ));
                }
            }
            // A read the batch did not answer is asked again with the throttled ones.
            throttled.append(&mut pending);
            pending = throttled;
            if pending.is_empty() {
                break;
            }
            let wait = wait
                .unwrap_or_else(|| self.retry_policy().backoff(attempt))
                .min(self.retry_policy().max_retry_after);
            attempt += 1;
            tracing::warn!(
                reads = pending.len(),
                wait_ms = wait.as_millis() as u64,
                attempt,
                "batched Graph reads throttled; retrying them in a new batch"
            );
            tokio::time::sleep(wait).await;
        }
        out
    }

    /// A batched read's answer: its `value`, and the pages after it.
    async fn first_page(&self, body: &Value, path: &str, what: &str) -> Result<Vec<Value>, Error> {
        let Some(items) = body["value"].as_array() else {
            return Err(Error::Answer {
                what: what.to_owned(),
                path: url_path(path),
                message: "the answer has no \"value\" array".into(),
            });
        };
        let mut items = items.clone();
        if let Some(next) = body["@odata.nextLink"].as_str() {
            items.extend(self.get_all(next.to_owned(), what).await?);
        }
        Ok(items)
    }
}

/// A header of a batched answer (`headers` is an object; names in any case).
fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// Graph's `error.code` and `error.message` of a batched answer's body.
fn graph_error_of(body: &Value) -> (String, String) {
    let text = |k: &str| body["error"][k].as_str().unwrap_or_default().to_owned();
    (text("code"), text("message"))
}
