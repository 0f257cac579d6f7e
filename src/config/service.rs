//! `[service]`: the long-running service and the state store, as written ([`RawService`],
//! with its defaults) and validated ([`ServiceConfig`]).
//!
//! It checks this section's values only; it must not look at `[source]` or `[[apps]]`, and
//! it never reads the webhook secret while validating (only [`ServiceConfig::webhook_token`]
//! does, when a command needs it).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigText, Dur, Error, Secret, read_secret};

/// `[service]`: the long-running service and the state store.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Admin and webhook HTTP address.
    pub listen: String,
    /// Time between the starts of two full cycles of one app.
    pub full_sync_interval: Duration,
    /// State store URL (`sqlite://path`).
    pub state: String,
    /// Name of the environment variable holding the webhook bearer token.
    pub webhook_token_env: String,
    /// Expiry of an activation that carries none.
    pub max_activation: Duration,
}

impl ServiceConfig {
    /// Reads the webhook bearer token from its environment variable.
    ///
    /// # Errors
    /// [`Error::MissingSecret`] when the variable is unset or empty.
    pub fn webhook_token(&self) -> Result<Secret, Error> {
        read_secret(
            "service.webhook_token_env",
            &self.webhook_token_env,
            "webhook bearer token",
        )
    }
}

/// `[service]` as written; every key has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawService {
    listen: String,
    full_sync_interval: Dur,
    state: String,
    webhook_token_env: String,
    max_activation: Dur,
}

impl Default for RawService {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            full_sync_interval: Dur(Duration::from_secs(40 * 60)),
            state: "sqlite://state/scim-sync.db".into(),
            webhook_token_env: "SCIM_SYNC_WEBHOOK_TOKEN".into(),
            max_activation: Dur(Duration::from_secs(8 * 3600)),
        }
    }
}

/// Validates `[service]`: `listen`, then `full_sync_interval`, then `max_activation`.
pub(super) fn validate(cfg: &ConfigText<'_>, raw: RawService) -> Result<ServiceConfig, Error> {
    listen(cfg, &raw.listen)?;
    // The scheduler counts whole seconds; a zero interval or expiry would be a busy loop.
    for (name, value) in [
        ("full_sync_interval", raw.full_sync_interval.0),
        ("max_activation", raw.max_activation.0),
    ] {
        at_least_a_second(cfg, name, value)?;
    }
    Ok(ServiceConfig {
        listen: raw.listen,
        full_sync_interval: raw.full_sync_interval.0,
        state: raw.state,
        webhook_token_env: raw.webhook_token_env,
        max_activation: raw.max_activation.0,
    })
}

/// `listen` must be a socket address.
fn listen(cfg: &ConfigText<'_>, listen: &str) -> Result<(), Error> {
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(cfg.invalid_at_key(
            "listen",
            "service.listen".into(),
            format!("{listen:?} is not an address such as 127.0.0.1:8787"),
        ));
    }
    Ok(())
}

/// `service.{name}` must be at least one second.
fn at_least_a_second(cfg: &ConfigText<'_>, name: &str, value: Duration) -> Result<(), Error> {
    if value < Duration::from_secs(1) {
        return Err(cfg.invalid_at_key(
            name,
            format!("service.{name}"),
            "must be at least 1s".into(),
        ));
    }
    Ok(())
}
