//! OAuth 2.0 client credentials against the Microsoft identity platform (v2.0 endpoint):
//! one app-only token for Microsoft Graph, cached and renewed about five minutes before it
//! expires.
//!
//! The client secret goes on the wire in the token request body and nowhere else: it is
//! never logged, never put in an error, and `Debug` shows it as `***`. When the identity
//! platform refuses, the error carries its `error` and `error_description` (with the
//! `AADSTS…` code) and a sentence saying what an administrator should check.

use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::time::Instant;

use super::Error;
use crate::config::Secret;

/// A token is renewed this long before the identity platform says it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Attempts of one token request when the identity platform throttles or fails.
const TOKEN_ATTEMPTS: u32 = 3;
/// Wait before retrying a token request that carried no `Retry-After`.
const TOKEN_BACKOFF: Duration = Duration::from_secs(1);

/// Characters `application/x-www-form-urlencoded` leaves alone besides letters and digits.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'*');

/// Gets and caches app-only Graph tokens for one app registration.
pub struct TokenSource {
    http: reqwest::Client,
    tenant_id: String,
    client_id: String,
    secret: Secret,
    token_url: String,
    scope: String,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    renew_at: Instant,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl TokenSource {
    /// A token source for `client_id` in `tenant_id`, asking `{login_url}/{tenant_id}/oauth2/v2.0/token`
    /// for the scope `{graph_url}/.default`.
    pub fn new(
        http: reqwest::Client,
        login_url: &str,
        graph_url: &str,
        tenant_id: &str,
        client_id: &str,
        secret: Secret,
    ) -> Self {
        TokenSource {
            http,
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            secret,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                login_url.trim_end_matches('/'),
                utf8_percent_encode(tenant_id, super::SEGMENT)
            ),
            scope: format!("{}/.default", graph_url.trim_end_matches('/')),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The token endpoint asked.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// A valid token: the cached one, or a new one when none is cached or the cached one is
    /// within [`RENEW_BEFORE`] of its expiry.
    ///
    /// # Errors
    /// [`Error::Auth`] with the identity platform's answer and what to check.
    pub async fn token(&self) -> Result<Secret, Error> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let mut attempt = 0u32;
        let fresh = loop {
            match self.request().await {
                Ok(fresh) => break fresh,
                Err((err, Some(wait))) if attempt + 1 < TOKEN_ATTEMPTS => {
                    tracing::warn!(
                        tenant = %self.tenant_id,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        error = %err,
                        "retrying the Microsoft Graph token request"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err((err, _)) => return Err(err),
            }
        };
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets `stale` (Graph answered 401 to it), so the next [`TokenSource::token`] asks
    /// for a new one. A token renewed meanwhile by another request is kept.
    pub async fn invalidate(&self, stale: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == stale) {
            *cached = None;
        }
    }

    /// One token request. The error comes with a wait when it is worth retrying (throttled,
    /// a server error, a transport error); refusals (`4xx`) are final.
    async fn request(&self) -> Result<Cached, (Error, Option<Duration>)> {
        let body = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose()),
            ("scope", self.scope.as_str()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, FORM)))
        .collect::<Vec<_>>()
        .join("&");
        let auth_error = |message: String| Error::Auth {
            tenant: self.tenant_id.clone(),
            url: self.token_url.clone(),
            message,
        };
        let resp = self
            .http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                (
                    auth_error(super::http::transport_message(e)),
                    Some(TOKEN_BACKOFF),
                )
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::http::parse_retry_after)
            .map(|d| d.min(super::http::MAX_RETRY_AFTER));
        let bytes = crate::http::read_body(resp, crate::http::DEFAULT_MAX_RESPONSE)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Read(e) => (
                    auth_error(super::http::transport_message(e)),
                    Some(TOKEN_BACKOFF),
                ),
                // Asking again would read it again.
                crate::http::BodyError::TooLarge(body) => {
                    (auth_error(format!("HTTP {status}: {body}; refused")), None)
                }
            })?;
        let started = Instant::now();
        if (200..300).contains(&status) {
            let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| {
                (
                    auth_error(format!(
                        "HTTP {status}, but the answer is not a token response: {e}"
                    )),
                    None,
                )
            })?;
            // Some clouds send expires_in as a string.
            let lifetime = answer
                .expires_in
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .unwrap_or(3599);
            tracing::debug!(tenant = %self.tenant_id, expires_in = lifetime, "got a Microsoft Graph token");
            return Ok(Cached {
                token: Secret::new(answer.access_token),
                renew_at: started + renew_after(Duration::from_secs(lifetime)),
            });
        }
        let err: TokenError = serde_json::from_slice(&bytes).unwrap_or_default();
        let mut message = format!("HTTP {status}");
        if !err.error.is_empty() {
            message.push_str(&format!(" {}", err.error));
        }
        let description = first_line(&err.error_description).replace(self.secret.expose(), "***");
        if !description.is_empty() {
            message.push_str(&format!(": {description}"));
        }
        let code = aadsts_code(&err.error_description).or(err.error_codes.first().copied());
        if let Some(hint) = hint(code, &err.error, &self.tenant_id, &self.client_id) {
            message.push_str(&format!(". {hint}"));
        }
        let wait = (status == 429 || status >= 500).then(|| retry_after.unwrap_or(TOKEN_BACKOFF));
        Err((auth_error(message), wait))
    }
}

/// How long a token with `lifetime` is used: until [`RENEW_BEFORE`] its end, or half its
/// life when it is shorter than that.
pub fn renew_after(lifetime: Duration) -> Duration {
    if lifetime > RENEW_BEFORE * 2 {
        lifetime - RENEW_BEFORE
    } else {
        lifetime / 2
    }
}

/// The first line of an identity platform description (the rest is trace and correlation ids).
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// `7000215` from `AADSTS7000215: Invalid client secret provided…`.
fn aadsts_code(description: &str) -> Option<u64> {
    let rest = &description[description.find("AADSTS")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What an administrator should check for the common refusals.
fn hint(code: Option<u64>, error: &str, tenant: &str, client: &str) -> Option<String> {
    let text = match code {
        Some(7000215) => "The client secret is wrong: put the secret's Value (not its Secret ID) from the app registration's Certificates & secrets page into source.client_secret_env or source.client_secret_file".to_owned(),
        Some(7000222) => "The client secret has expired: create a new one under the app registration's Certificates & secrets and update source.client_secret_env or source.client_secret_file".to_owned(),
        Some(700016) => format!("No application with client_id {client} exists in tenant {tenant}: check source.client_id (the Application (client) ID) and source.tenant_id, and that the app is registered in or consented to this tenant"),
        Some(90002) => format!("Tenant {tenant} was not found: check source.tenant_id (the Directory (tenant) ID) and, for a national cloud, source.login_url"),
        Some(900023) => format!("{tenant:?} is not a valid tenant: check source.tenant_id"),
        Some(70011) | Some(1002012) => "The scope was refused: check source.graph_url (it must be the Graph root, e.g. https://graph.microsoft.com)".to_owned(),
        Some(7000218) | Some(900144) => "The request carried no client secret: check source.client_secret_env or source.client_secret_file".to_owned(),
        Some(700024) | Some(50034) => format!("Check source.client_id {client} and source.tenant_id {tenant}"),
        _ if error == "invalid_client" => "Check source.client_id and the client secret".to_owned(),
        _ if error == "unauthorized_client" => format!("Application {client} is not allowed to use client credentials in tenant {tenant}: check the app registration"),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_five_minutes_early() {
        assert_eq!(
            renew_after(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            renew_after(Duration::from_secs(300)),
            Duration::from_secs(150)
        );
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn aadsts_codes_are_found() {
        assert_eq!(
            aadsts_code("AADSTS7000215: Invalid client secret provided. Trace ID: x"),
            Some(7000215)
        );
        assert_eq!(aadsts_code("no code"), None);
        assert!(
            hint(Some(90002), "invalid_request", "t", "c").is_some_and(|h| h.contains("tenant_id"))
        );
    }
}
