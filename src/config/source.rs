//! `[source]`: where users and groups come from, as written ([`RawSource`]) and validated
//! ([`SourceConfig`]): a directory file, or Microsoft Graph ([`GraphConfig`]) with its
//! tenant, app registration, endpoints and PIM poll interval.
//!
//! It checks this section's values only; it must not look at `[service]` or `[[apps]]`. The
//! client secret is never in the file: only where it lives ([`SecretFrom`]), read by
//! [`GraphConfig::client_secret`] when a command needs it, never while validating.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigText, Dur, Error, Secret, read_secret};

/// `[source]`: where users and groups come from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// A JSON directory file, re-read at every cycle.
    File {
        /// The file, as written in the config (relative paths are relative to the working directory).
        path: PathBuf,
    },
    /// Microsoft Entra ID through Microsoft Graph.
    Graph(GraphConfig),
}

/// `[source] kind = "graph"`: the tenant, the app registration and the endpoints.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// Directory (tenant) id or a verified domain of the tenant.
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    /// Where the client secret is read from.
    pub client_secret: SecretFrom,
    /// Microsoft Graph root, without a trailing slash (`https://graph.microsoft.com`).
    pub graph_url: String,
    /// Microsoft identity platform root, without a trailing slash
    /// (`https://login.microsoftonline.com`).
    pub login_url: String,
    /// Time between two polls of PIM assignment instances.
    pub pim_poll_interval: Duration,
    /// Time between two scoped delta reads of the apps' push groups (`watch_interval`).
    pub watch_interval: Duration,
}

/// Where a secret lives: never in the config file itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretFrom {
    /// An environment variable, by name (`client_secret_env`).
    Env(String),
    /// A file, e.g. a mounted container secret (`client_secret_file`); surrounding
    /// whitespace is ignored.
    File(PathBuf),
}

impl GraphConfig {
    /// Default `graph_url`.
    pub const DEFAULT_GRAPH_URL: &'static str = "https://graph.microsoft.com";
    /// Default `login_url`.
    pub const DEFAULT_LOGIN_URL: &'static str = "https://login.microsoftonline.com";

    /// Reads the client secret from its environment variable or file.
    ///
    /// # Errors
    /// [`Error::MissingSecret`] or [`Error::SecretFile`] naming the `source.client_secret_*`
    /// key; the message never contains the secret.
    pub fn client_secret(&self) -> Result<Secret, Error> {
        const WHAT: &str = "client secret of the Entra app registration";
        match &self.client_secret {
            SecretFrom::Env(var) => read_secret("source.client_secret_env", var, WHAT),
            SecretFrom::File(path) => {
                let file_error = |message: String| Error::SecretFile {
                    key: "source.client_secret_file".into(),
                    path: path.clone(),
                    message,
                    what: WHAT,
                };
                let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(file_error("the file is empty".into()));
                }
                Ok(Secret::new(text))
            }
        }
    }
}

/// `[source]` as written, told apart by `kind`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawSource {
    File { path: PathBuf },
    Graph(RawGraph),
}

/// `[source] kind = "graph"` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGraph {
    tenant_id: String,
    client_id: String,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    graph_url: Option<String>,
    login_url: Option<String>,
    pim_poll_interval: Option<Dur>,
    watch_interval: Option<Dur>,
}

/// Validates `[source]`.
pub(super) fn validate(cfg: &ConfigText<'_>, raw: RawSource) -> Result<SourceConfig, Error> {
    Ok(match raw {
        RawSource::File { path } => SourceConfig::File { path },
        RawSource::Graph(g) => SourceConfig::Graph(graph(cfg, g)?),
    })
}

/// Validates `[source] kind = "graph"`: the ids, then the secret's location, then the
/// endpoints, then the poll and watch intervals.
fn graph(cfg: &ConfigText<'_>, g: RawGraph) -> Result<GraphConfig, Error> {
    for (name, value) in [("tenant_id", &g.tenant_id), ("client_id", &g.client_id)] {
        graph_id(cfg, name, value)?;
    }
    let client_secret = secret_from(cfg, g.client_secret_env, g.client_secret_file)?;
    let graph_url = endpoint(
        cfg,
        "graph_url",
        g.graph_url,
        GraphConfig::DEFAULT_GRAPH_URL,
    )?;
    let login_url = endpoint(
        cfg,
        "login_url",
        g.login_url,
        GraphConfig::DEFAULT_LOGIN_URL,
    )?;
    let pim_poll_interval = interval(cfg, "pim_poll_interval", g.pim_poll_interval, 30)?;
    let watch_interval = interval(cfg, "watch_interval", g.watch_interval, 10)?;
    Ok(GraphConfig {
        tenant_id: g.tenant_id.trim().to_owned(),
        client_id: g.client_id.trim().to_owned(),
        client_secret,
        graph_url,
        login_url,
        pim_poll_interval,
        watch_interval,
    })
}

/// An [`Error::Invalid`] for `source.{name}`, at the line of `name =`.
fn invalid(cfg: &ConfigText<'_>, name: &str, message: String) -> Error {
    cfg.invalid_at_key(name, format!("source.{name}"), message)
}

/// `tenant_id` and `client_id` go into URLs and token requests: no separators, no spaces.
fn graph_id(cfg: &ConfigText<'_>, name: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() || value.contains(['/', '?', '#', ' ']) {
        return Err(invalid(
            cfg,
            name,
            format!("{value:?} must be an id (a GUID) or, for tenant_id, a domain of the tenant"),
        ));
    }
    Ok(())
}

/// Exactly one of `client_secret_env` and `client_secret_file`, not empty.
fn secret_from(
    cfg: &ConfigText<'_>,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<SecretFrom, Error> {
    match (env, file) {
        (Some(var), None) if !var.trim().is_empty() => Ok(SecretFrom::Env(var)),
        (None, Some(file)) if !file.as_os_str().is_empty() => Ok(SecretFrom::File(file)),
        (Some(_), Some(_)) => Err(cfg.invalid_at_key(
            "client_secret_file",
            "source.client_secret_env".into(),
            "give either client_secret_env or client_secret_file, not both".into(),
        )),
        (Some(_), None) => Err(invalid(cfg, "client_secret_env", "is empty".into())),
        (None, Some(_)) => Err(invalid(cfg, "client_secret_file", "is empty".into())),
        (None, None) => Err(cfg.invalid_at_key(
            "kind",
            "source.client_secret_env".into(),
            "missing: set client_secret_env (the name of an environment variable holding the secret) or client_secret_file (a file holding it)".into(),
        )),
    }
}

/// `graph_url` or `login_url` (or its default): an http(s) root with no query or fragment,
/// kept without surrounding spaces or a trailing `/`.
fn endpoint(
    cfg: &ConfigText<'_>,
    name: &str,
    value: Option<String>,
    default: &str,
) -> Result<String, Error> {
    let value = value.unwrap_or_else(|| default.to_owned());
    let trimmed = value.trim().trim_end_matches('/').to_owned();
    match reqwest::Url::parse(&trimmed) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            Ok(trimmed)
        }
        _ => Err(invalid(
            cfg,
            name,
            format!("{value:?} is not an http(s) URL such as {default}"),
        )),
    }
}

/// `pim_poll_interval` or `watch_interval`: `default_secs` unless set, at least 1s.
fn interval(
    cfg: &ConfigText<'_>,
    name: &str,
    value: Option<Dur>,
    default_secs: u64,
) -> Result<Duration, Error> {
    let interval = value.map_or(Duration::from_secs(default_secs), |d| d.0);
    if interval < Duration::from_secs(1) {
        return Err(invalid(cfg, name, "must be at least 1s".into()));
    }
    Ok(interval)
}
