//! The command line's client of a running service (its admin HTTP on `service.listen`): the
//! `activate` command, and `sync-now`'s hand-over of a cycle to the service that holds the
//! app's lease. It reads and writes the same types the server does
//! ([`crate::activation`], [`crate::service::Started`]), never JSON by hand.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::{Fatal, exit, render};
use crate::activation::{Accepted, ActivationRequest, ErrorBody};
use crate::config::{Config, Secret};
use crate::model::AppName;
use crate::report::CycleReport;
use crate::service::Started;
use crate::service::lease::HandOver;

/// The URL a client uses to reach the service's admin HTTP (an unspecified listen address
/// is reached on loopback).
fn service_url(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        _ => format!("http://{listen}"),
    }
}

/// A client of the admin HTTP of a service, with the webhook token.
pub(super) struct ServiceClient {
    http: reqwest::Client,
    token: Secret,
    /// Cycles handed over read the app back and repair drift (`sync-now --verify`).
    verify: bool,
}

/// Why a call to the service did not give its answer.
enum CallError {
    /// The service could not be reached.
    Transport(String),
    /// Its answer could not be read.
    BadAnswer(String),
    /// The service refused: its status and `error`.
    Refused(u16, String),
}

impl ServiceClient {
    /// A client calling with the webhook token of `cfg`.
    ///
    /// # Errors
    /// [`Fatal`] naming the token's variable when it is not set.
    pub(super) fn new(cfg: &Config) -> Result<Self, Fatal> {
        Ok(ServiceClient {
            http: reqwest::Client::new(),
            token: cfg.service.webhook_token()?,
            verify: false,
        })
    }

    /// Cycles this client hands over verify (`sync-now --verify`).
    pub(super) fn verifying(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// POSTs `body` to `url` and reads the answer as `T` when the status is `want`.
    async fn post<T: DeserializeOwned>(
        &self,
        url: &str,
        body: &impl serde::Serialize,
        want: reqwest::StatusCode,
        timeout: Option<Duration>,
    ) -> Result<T, CallError> {
        let mut req = self
            .http
            .post(url)
            .bearer_auth(self.token.expose())
            .json(body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("{url}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status != want {
            let why = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(CallError::Refused(status.as_u16(), why));
        }
        serde_json::from_str(&text)
            .map_err(|e| CallError::BadAnswer(format!("unexpected answer from {url}: {e}")))
    }
}

impl HandOver for ServiceClient {
    fn hand_over<'a>(
        &'a self,
        listen: &'a str,
        apps: &'a [AppName],
    ) -> BoxFuture<'a, Result<Vec<CycleReport>, String>> {
        Box::pin(async move {
            let verify = if self.verify { "&verify=true" } else { "" };
            let url = format!("{}/v1/sync?wait=true{verify}", service_url(listen));
            let body = serde_json::json!({ "apps": apps });
            let started: Started = self
                .post(&url, &body, reqwest::StatusCode::OK, None)
                .await
                .map_err(|e| match e {
                    CallError::Transport(why) | CallError::BadAnswer(why) => why,
                    CallError::Refused(status, why) => format!("{url} answered {status}: {why}"),
                })?;
            let skipped: Vec<String> = started
                .busy
                .iter()
                .chain(&started.leased_elsewhere)
                .cloned()
                .collect();
            if !skipped.is_empty() {
                return Err(format!("the service could not run {}", skipped.join(", ")));
            }
            Ok(started.apps.unwrap_or_default())
        })
    }
}

/// The audit fields `activate` sends with an activation (SPEC §4).
pub(super) struct Audit {
    /// Why the privilege is needed.
    pub justification: Option<String>,
    /// The ticket the activation serves.
    pub ticket_number: Option<String>,
    /// The system that ticket lives in.
    pub ticket_system: Option<String>,
}

/// `scim-sync activate`: reports one activation to the running service and prints the
/// per-app outcome.
pub(super) async fn activate(
    config: &std::path::Path,
    group: String,
    user: String,
    expires_at: Option<DateTime<Utc>>,
    audit: Audit,
) -> Result<u8, Fatal> {
    let cfg = Config::load(config)?;
    let client = ServiceClient::new(&cfg)?;
    let url = format!("{}/v1/activations", service_url(&cfg.service.listen));
    let body = ActivationRequest {
        group_id: group.as_str().into(),
        user_id: user.as_str().into(),
        expires_at,
        justification: audit.justification,
        ticket_number: audit.ticket_number,
        ticket_system: audit.ticket_system,
    };
    let accepted: Accepted = client
        .post(
            &url,
            &body,
            reqwest::StatusCode::ACCEPTED,
            Some(Duration::from_secs(30)),
        )
        .await
        .map_err(|e| match e {
            CallError::Transport(why) => Fatal(format!(
                "cannot reach the service at {url} (service.listen in {}): is `scim-sync run` running? ({why})",
                cfg.path.display()
            )),
            CallError::BadAnswer(why) => Fatal(why),
            CallError::Refused(status, why) => Fatal(format!(
                "the service refused the activation ({status}): {why}"
            )),
        })?;
    render::accepted(&accepted, &group, &user);
    Ok(exit::OK)
}
