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
    /// Where the state store's URL comes from.
    pub state: StateFrom,
    /// How long a replica's hold on an app lasts without renewal (3 s … 5 min).
    pub lease_ttl: Duration,
    /// Name of the environment variable holding the webhook bearer token.
    pub webhook_token_env: String,
    /// Expiry of a webhook activation that carries none, and the cap of one that does
    /// (5 min … 24 h).
    pub max_activation: Duration,
}

/// The state store's URL: written in the file (`state`), or held by an environment variable
/// (`state_env`) when it carries a password, which then never appears in the file, logs or
/// errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateFrom {
    /// `state = "sqlite://…"` or `"postgres://user@host:port/db"`.
    Url(String),
    /// `state_env = "VAR"`.
    Env(String),
}

impl std::fmt::Display for StateFrom {
    /// What `status` and `check-config` print: the URL, or the variable's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateFrom::Url(url) => f.write_str(url),
            StateFrom::Env(var) => write!(f, "${var}"),
        }
    }
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

    /// The state store's URL, read from `state_env` when the config names one.
    ///
    /// # Errors
    /// [`Error::MissingSecret`] when that variable is unset or empty.
    pub fn state_url(&self) -> Result<Secret, Error> {
        match &self.state {
            StateFrom::Url(url) => Ok(Secret::new(url.clone())),
            StateFrom::Env(var) => read_secret("service.state_env", var, "state store URL"),
        }
    }
}

/// `[service]` as written; every key has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawService {
    listen: String,
    full_sync_interval: Dur,
    state: Option<String>,
    state_env: Option<String>,
    lease_ttl: Dur,
    webhook_token_env: String,
    max_activation: Dur,
}

impl Default for RawService {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            full_sync_interval: Dur(Duration::from_secs(40 * 60)),
            state: None,
            state_env: None,
            lease_ttl: Dur(Duration::from_secs(15)),
            webhook_token_env: "SCIM_SYNC_WEBHOOK_TOKEN".into(),
            max_activation: Dur(Duration::from_secs(8 * 3600)),
        }
    }
}

/// The embedded default state store.
pub const DEFAULT_STATE: &str = "sqlite://state/scim-sync.db";

/// Validates `[service]`: `listen`, `full_sync_interval`, `max_activation`, `lease_ttl`,
/// then `state` / `state_env`.
pub(super) fn validate(cfg: &ConfigText<'_>, raw: RawService) -> Result<ServiceConfig, Error> {
    listen(cfg, &raw.listen)?;
    // The scheduler counts whole seconds; a zero interval would be a busy loop.
    at_least_a_second(cfg, "full_sync_interval", raw.full_sync_interval.0)?;
    // PIM's own activation settings range from 30 minutes to 24 hours; a JIT privilege
    // shorter than 5 minutes would expire before most apps have it.
    within(
        cfg,
        "max_activation",
        raw.max_activation.0,
        Duration::from_secs(5 * 60),
        Duration::from_secs(24 * 3600),
        "5m and 24h",
    )?;
    // Renewed every third of it: under 3 s a busy store stalls the renewal; over 5 min a
    // failover waits too long.
    within(
        cfg,
        "lease_ttl",
        raw.lease_ttl.0,
        Duration::from_secs(3),
        Duration::from_secs(5 * 60),
        "3s and 5m",
    )?;
    let state = match (raw.state, raw.state_env) {
        (Some(_), Some(_)) => {
            return Err(cfg.invalid_at_key(
                "state_env",
                "service.state_env".into(),
                "set either service.state or service.state_env, not both".into(),
            ));
        }
        (_, Some(var)) if var.trim().is_empty() => {
            return Err(cfg.invalid_at_key(
                "state_env",
                "service.state_env".into(),
                "must name an environment variable".into(),
            ));
        }
        (_, Some(var)) => StateFrom::Env(var),
        (Some(url), None) => StateFrom::Url(url),
        (None, None) => StateFrom::Url(DEFAULT_STATE.into()),
    };
    Ok(ServiceConfig {
        listen: raw.listen,
        full_sync_interval: raw.full_sync_interval.0,
        state,
        lease_ttl: raw.lease_ttl.0,
        webhook_token_env: raw.webhook_token_env,
        max_activation: raw.max_activation.0,
    })
}

/// `service.{name}` must lie between `min` and `max` (`range` says so in words).
fn within(
    cfg: &ConfigText<'_>,
    name: &str,
    value: Duration,
    min: Duration,
    max: Duration,
    range: &str,
) -> Result<(), Error> {
    if value < min || value > max {
        return Err(cfg.invalid_at_key(
            name,
            format!("service.{name}"),
            format!(
                "{} is out of range: must be between {range}",
                crate::clock::show_duration(value)
            ),
        ));
    }
    Ok(())
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
