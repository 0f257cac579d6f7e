//! Configuration: the TOML file of SPEC §3, parsed and validated into a [`Config`].
//!
//! Every error names the file, the key and, where the file has one, the line. Unknown keys are
//! errors. Secrets are never read from the file, only the names of the environment variables
//! that hold them; [`AppConfig::token`] reads the variable when a command needs it, so commands
//! that need no secret (`status`) work without them. A [`Secret`] never prints its value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{AppName, Deprovision, SourceId};

/// Where the config is read from when neither `--config` nor `$SCIM_SYNC_CONFIG` is given.
pub const DEFAULT_PATH: &str = "config/scim-sync.toml";

/// A configuration error: the file, the key, the line (when known) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong form.
    #[error("{}{}: {message}", path.display(), at_line(*line))]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line, or 0 when the parser gave none.
        line: usize,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}{}: {key}: {message}", path.display(), at_line(*line))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line, or 0 when unknown.
        line: usize,
        /// The key at fault, e.g. `apps[crm].groups`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A secret's environment variable is not set.
    #[error("{key}: environment variable {var} is not set (it must hold the {what})")]
    MissingSecret {
        /// The key naming the variable, e.g. `apps[crm].token_env`.
        key: String,
        /// The variable's name.
        var: String,
        /// What the secret is for.
        what: &'static str,
    },
    /// A secret's file could not be read or is empty.
    #[error("{key}: cannot read {path}: {message} (it must hold the {what})")]
    SecretFile {
        /// The key naming the file, e.g. `source.client_secret_file`.
        key: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
        /// What the secret is for.
        what: &'static str,
    },
}

/// A secret value (a bearer token, a client secret). Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, to put on the wire. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// `[service]`.
    pub service: ServiceConfig,
    /// `[source]`.
    pub source: SourceConfig,
    /// `[[apps]]`, in file order.
    pub apps: Vec<AppConfig>,
}

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
                Ok(Secret(text.to_owned()))
            }
        }
    }
}

/// `push_limit`: the per-app quota for activation pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLimit {
    /// Activations allowed at once after a quiet spell.
    pub burst: NonZeroU32,
    /// Time in which `burst` activations are replenished.
    pub per: Duration,
}

/// One `[[apps]]` entry.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Unique name (`[a-z0-9-]+`).
    pub name: AppName,
    /// SCIM base URL, without a trailing slash.
    pub base_url: String,
    /// Name of the environment variable holding the bearer token.
    pub token_env: String,
    /// Assigned groups (source ids).
    pub groups: Vec<SourceId>,
    /// Activation push quota.
    pub push_limit: PushLimit,
    /// What happens to a user leaving scope.
    pub deprovision: Deprovision,
    /// SCIM attribute used to find a pre-existing user before creating one.
    pub matching: String,
    /// More disables and deletes than this in one cycle are held, not sent.
    pub max_deprovisions: u32,
    /// Count members of nested groups as members.
    pub flatten_nested: bool,
    /// SCIM requests in flight during a cycle.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// `[apps.attributes]` overrides: SCIM path → source attribute (`""` drops the default entry).
    pub attributes: BTreeMap<String, String>,
}

impl AppConfig {
    /// Reads the app's bearer token from its environment variable.
    ///
    /// # Errors
    /// [`Error::MissingSecret`] naming the app's `token_env` key when the variable is unset or empty.
    pub fn token(&self) -> Result<Secret, Error> {
        read_secret(
            &format!("apps[{}].token_env", self.name),
            &self.token_env,
            "SCIM bearer token of this app",
        )
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
}

fn read_secret(key: &str, var: &str, what: &'static str) -> Result<Secret, Error> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
        _ => Err(Error::MissingSecret {
            key: key.to_owned(),
            var: var.to_owned(),
            what,
        }),
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    /// [`Error`] naming the file, key and line at fault.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` is only used in messages.
    ///
    /// # Errors
    /// [`Error`] naming the file, key and line at fault.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Syntax {
            path: path.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            message: e.message().trim().to_owned(),
        })?;
        let invalid = |span: std::ops::Range<usize>, key: String, message: String| Error::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key,
            message,
        };

        let service = raw.service;
        if service.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Invalid {
                path: path.to_owned(),
                line: find_key_line(text, "listen"),
                key: "service.listen".into(),
                message: format!(
                    "{:?} is not an address such as 127.0.0.1:8787",
                    service.listen
                ),
            });
        }
        // The scheduler counts whole seconds; a zero interval or expiry would be a busy loop.
        for (name, value, least) in [
            (
                "full_sync_interval",
                service.full_sync_interval.0,
                Duration::from_secs(1),
            ),
            (
                "max_activation",
                service.max_activation.0,
                Duration::from_secs(1),
            ),
        ] {
            if value < least {
                return Err(Error::Invalid {
                    path: path.to_owned(),
                    line: find_key_line(text, name),
                    key: format!("service.{name}"),
                    message: "must be at least 1s".into(),
                });
            }
        }
        let service = ServiceConfig {
            listen: service.listen,
            full_sync_interval: service.full_sync_interval.0,
            state: service.state,
            webhook_token_env: service.webhook_token_env,
            max_activation: service.max_activation.0,
        };

        let source = match raw.source {
            RawSource::File { path } => SourceConfig::File { path },
            RawSource::Graph(g) => SourceConfig::Graph(graph_config(path, text, g)?),
        };

        let mut names = BTreeSet::new();
        let mut apps = Vec::with_capacity(raw.apps.len());
        for app in raw.apps {
            let name_span = app.name.span();
            let name = app.name.into_inner();
            let key = |k: &str| format!("apps[{name}].{k}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    name_span,
                    "apps.name".into(),
                    format!("{name:?} must use only a-z, 0-9 and -"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(
                    name_span,
                    key("name"),
                    "two apps have this name; names must be unique".into(),
                ));
            }
            let base_span = app.base_url.span();
            let base_url = app.base_url.into_inner().trim_end_matches('/').to_owned();
            match reqwest::Url::parse(&base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(invalid(
                        base_span,
                        key("base_url"),
                        format!("{base_url:?} is not an http(s) URL"),
                    ));
                }
            }
            let groups_span = app.groups.span();
            let groups: Vec<SourceId> = app
                .groups
                .into_inner()
                .into_iter()
                .map(SourceId::new)
                .collect();
            if groups.is_empty() {
                return Err(invalid(
                    groups_span,
                    key("groups"),
                    "assign at least one group: an app with no groups would have every user deprovisioned".into(),
                ));
            }
            let conc_span = app.concurrency.span();
            let concurrency = app.concurrency.into_inner();
            if !(1..=64).contains(&concurrency) {
                return Err(invalid(
                    conc_span,
                    key("concurrency"),
                    format!("{concurrency} is out of range 1..=64"),
                ));
            }
            if app.timeout.0.is_zero() {
                return Err(Error::Invalid {
                    path: path.to_owned(),
                    line: find_key_line(text, "timeout"),
                    key: key("timeout"),
                    message: "must be more than zero".into(),
                });
            }
            let attrs_span = app.attributes.span();
            let attributes = app.attributes.into_inner();
            for (scim_path, source_attr) in &attributes {
                if let Err(why) = crate::model::attr_path::check_scim_path(scim_path) {
                    return Err(invalid(
                        attrs_span.clone(),
                        format!("apps[{name}].attributes.{scim_path:?}"),
                        why,
                    ));
                }
                if source_attr.is_empty()
                    && crate::model::attr_path::REQUIRED_USER_PATHS.contains(&scim_path.as_str())
                {
                    return Err(invalid(
                        attrs_span.clone(),
                        format!("apps[{name}].attributes.{scim_path:?}"),
                        "this attribute is required and cannot be dropped".into(),
                    ));
                }
            }
            let matching_span = app.matching.span();
            let matching = app.matching.into_inner();
            let mapped = crate::model::attr_path::mapped_paths(&attributes);
            if matching.contains('[') || !mapped.iter().any(|p| p == &matching) {
                return Err(invalid(
                    matching_span,
                    key("matching"),
                    format!(
                        "{matching:?} must be a single-valued SCIM attribute of the mapping (e.g. userName, externalId)"
                    ),
                ));
            }
            let push = app.push_limit.into_inner();
            if push.per.0.is_zero() {
                return Err(Error::Invalid {
                    path: path.to_owned(),
                    line: find_key_line(text, "push_limit"),
                    key: key("push_limit.per"),
                    message: "must be more than zero".into(),
                });
            }
            apps.push(AppConfig {
                name: AppName::new(name.clone()),
                base_url,
                token_env: app.token_env,
                groups,
                push_limit: PushLimit {
                    burst: push.burst,
                    per: push.per.0,
                },
                deprovision: app.deprovision,
                matching,
                max_deprovisions: app.max_deprovisions,
                flatten_nested: app.flatten_nested,
                concurrency,
                timeout: app.timeout.0,
                attributes,
            });
        }
        if apps.is_empty() {
            return Err(Error::Invalid {
                path: path.to_owned(),
                line: 0,
                key: "apps".into(),
                message: "no [[apps]] configured: add at least one SCIM app".into(),
            });
        }
        Ok(Config {
            path: path.to_owned(),
            service,
            source,
            apps,
        })
    }

    /// The apps named in `names`, in config order; all apps when `names` is empty.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first unknown app.
    pub fn select_apps(&self, names: &[String]) -> Result<Vec<&AppConfig>, Error> {
        for n in names {
            if !self.apps.iter().any(|a| a.name.as_str() == n) {
                return Err(Error::Invalid {
                    path: self.path.clone(),
                    line: 0,
                    key: "--app".into(),
                    message: format!(
                        "no app named {n:?}; configured apps: {}",
                        self.apps
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(self
            .apps
            .iter()
            .filter(|a| names.is_empty() || names.iter().any(|n| n == a.name.as_str()))
            .collect())
    }
}

/// Validates `[source] kind = "graph"`.
fn graph_config(path: &Path, text: &str, g: RawGraph) -> Result<GraphConfig, Error> {
    let invalid = |name: &str, message: String| Error::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, name),
        key: format!("source.{name}"),
        message,
    };
    for (name, value) in [("tenant_id", &g.tenant_id), ("client_id", &g.client_id)] {
        if value.trim().is_empty() || value.contains(['/', '?', '#', ' ']) {
            return Err(invalid(
                name,
                format!(
                    "{value:?} must be an id (a GUID) or, for tenant_id, a domain of the tenant"
                ),
            ));
        }
    }
    let client_secret = match (g.client_secret_env, g.client_secret_file) {
        (Some(var), None) if !var.trim().is_empty() => SecretFrom::Env(var),
        (None, Some(file)) if !file.as_os_str().is_empty() => SecretFrom::File(file),
        (Some(_), Some(_)) => {
            return Err(Error::Invalid {
                path: path.to_owned(),
                line: find_key_line(text, "client_secret_file"),
                key: "source.client_secret_env".into(),
                message: "give either client_secret_env or client_secret_file, not both".into(),
            });
        }
        (Some(_), None) => return Err(invalid("client_secret_env", "is empty".into())),
        (None, Some(_)) => return Err(invalid("client_secret_file", "is empty".into())),
        (None, None) => {
            return Err(Error::Invalid {
                path: path.to_owned(),
                line: find_key_line(text, "kind"),
                key: "source.client_secret_env".into(),
                message: "missing: set client_secret_env (the name of an environment variable holding the secret) or client_secret_file (a file holding it)".into(),
            });
        }
    };
    let url = |name: &str, value: Option<String>, default: &str| -> Result<String, Error> {
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
                name,
                format!("{value:?} is not an http(s) URL such as {default}"),
            )),
        }
    };
    let graph_url = url("graph_url", g.graph_url, GraphConfig::DEFAULT_GRAPH_URL)?;
    let login_url = url("login_url", g.login_url, GraphConfig::DEFAULT_LOGIN_URL)?;
    let pim_poll_interval = g.pim_poll_interval.map_or(Duration::from_secs(30), |d| d.0);
    if pim_poll_interval < Duration::from_secs(1) {
        return Err(invalid("pim_poll_interval", "must be at least 1s".into()));
    }
    Ok(GraphConfig {
        tenant_id: g.tenant_id.trim().to_owned(),
        client_id: g.client_id.trim().to_owned(),
        client_secret,
        graph_url,
        login_url,
        pim_poll_interval,
    })
}

/// `:LINE` for a known line, nothing when it is unknown (0).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Line of the first `key =` in the text, for values whose span the parser does not keep.
fn find_key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// A duration written like `40m`, `10s`, `2h`, `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a duration written like `40m`, `10s`, `2h`, `1h30m`, `500ms`.
///
/// # Errors
/// A message quoting the text and showing the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("invalid duration {s:?}: write it like 40m, 10s, 2h or 1h30m"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    service: RawService,
    source: RawSource,
    #[serde(default)]
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawService {
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

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawSource {
    File { path: PathBuf },
    Graph(RawGraph),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    tenant_id: String,
    client_id: String,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    graph_url: Option<String>,
    login_url: Option<String>,
    pim_poll_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    base_url: Spanned<String>,
    token_env: String,
    groups: Spanned<Vec<String>>,
    #[serde(default = "default_push_limit")]
    push_limit: Spanned<RawPushLimit>,
    #[serde(default = "default_deprovision")]
    deprovision: Deprovision,
    #[serde(default = "default_matching")]
    matching: Spanned<String>,
    #[serde(default = "default_max_deprovisions")]
    max_deprovisions: u32,
    #[serde(default)]
    flatten_nested: bool,
    #[serde(default = "default_concurrency")]
    concurrency: Spanned<usize>,
    #[serde(default = "default_timeout")]
    timeout: Dur,
    #[serde(default = "default_attributes")]
    attributes: Spanned<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPushLimit {
    burst: NonZeroU32,
    per: Dur,
}

fn default_push_limit() -> Spanned<RawPushLimit> {
    Spanned::new(
        0..0,
        RawPushLimit {
            burst: NonZeroU32::MIN.saturating_add(4),
            per: Dur(Duration::from_secs(10)),
        },
    )
}
fn default_deprovision() -> Deprovision {
    Deprovision::Disable
}
fn default_matching() -> Spanned<String> {
    Spanned::new(0..0, "userName".into())
}
fn default_max_deprovisions() -> u32 {
    50
}
fn default_concurrency() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}
fn default_attributes() -> Spanned<BTreeMap<String, String>> {
    Spanned::new(0..0, BTreeMap::new())
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[service]
full_sync_interval = "40m"

[source]
kind = "file"
path = "config/directory.json"

[[apps]]
name = "crm"
base_url = "https://crm.example.com/scim/v2/"
token_env = "CRM_SCIM_TOKEN"
groups = ["g-crm-users"]
push_limit = { burst = 5, per = "10s" }
"#;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn defaults_and_values() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.service.full_sync_interval, Duration::from_secs(2400));
        assert_eq!(c.service.listen, "127.0.0.1:8787");
        let app = &c.apps[0];
        assert_eq!(app.base_url, "https://crm.example.com/scim/v2");
        assert_eq!(app.push_limit.burst.get(), 5);
        assert_eq!(app.push_limit.per, Duration::from_secs(10));
        assert_eq!(app.deprovision, Deprovision::Disable);
        assert_eq!(app.matching, "userName");
        assert_eq!(app.max_deprovisions, 50);
        assert_eq!(app.concurrency, 4);
        assert_eq!(app.timeout, Duration::from_secs(30));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("forty").unwrap_err().contains("40m"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = GOOD.replace("token_env =", "tokn_env = \"x\"\ntoken_env =");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:12:"), "{e}");
        assert!(e.contains("tokn_env"), "{e}");
    }

    #[test]
    fn bad_duration_names_line() {
        let text = GOOD.replace("\"40m\"", "\"40 minutes please\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
    }

    #[test]
    fn bad_app_values() {
        let e = parse(&GOOD.replace("\"crm\"", "\"CRM App\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml:10: apps.name"), "{e}");
        let e = parse(&GOOD.replace("[\"g-crm-users\"]", "[]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("apps[crm].groups"), "{e}");
        let e = parse(&GOOD.replace("https://crm.example.com/scim/v2/", "crm"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("apps[crm].base_url"), "{e}");
        let dup = format!(
            "{GOOD}\n[[apps]]\nname = \"crm\"\nbase_url = \"http://x\"\ntoken_env = \"T\"\ngroups = [\"g\"]\n"
        );
        let e = parse(&dup).unwrap_err().to_string();
        assert!(e.contains("unique"), "{e}");
        let e = parse(&GOOD.replace(
            "push_limit",
            "matching = \"emails[type eq \\\"work\\\"].value\"\npush_limit",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("apps[crm].matching"), "{e}");
    }

    #[test]
    fn missing_secret_names_key_not_value() {
        let mut c = parse(GOOD).unwrap();
        c.apps[0].token_env = "SCIM_SYNC_TEST_SURELY_UNSET_VAR".into();
        let e = c.apps[0].token().unwrap_err().to_string();
        assert!(e.contains("apps[crm].token_env"), "{e}");
        assert!(e.contains("SCIM_SYNC_TEST_SURELY_UNSET_VAR"), "{e}");
    }

    const GRAPH: &str = r#"
[source]
kind = "graph"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
client_secret_env = "GRAPH_CLIENT_SECRET"

[[apps]]
name = "crm"
base_url = "https://crm.example.com/scim/v2/"
token_env = "CRM_SCIM_TOKEN"
groups = ["g-crm-users"]
"#;

    fn graph(c: &Config) -> &GraphConfig {
        match &c.source {
            SourceConfig::Graph(g) => g,
            other => panic!("not a graph source: {other:?}"),
        }
    }

    #[test]
    fn graph_source_defaults() {
        let c = parse(GRAPH).unwrap();
        let g = graph(&c);
        assert_eq!(g.tenant_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(
            g.client_secret,
            SecretFrom::Env("GRAPH_CLIENT_SECRET".into())
        );
        assert_eq!(g.graph_url, "https://graph.microsoft.com");
        assert_eq!(g.login_url, "https://login.microsoftonline.com");
        assert_eq!(g.pim_poll_interval, Duration::from_secs(30));
        let c = parse(&GRAPH.replace(
            "client_secret_env = \"GRAPH_CLIENT_SECRET\"",
            "client_secret_file = \"/run/secrets/graph\"\ngraph_url = \"http://127.0.0.1:9/\"\nlogin_url = \"https://login.microsoftonline.us\"\npim_poll_interval = \"1m\"",
        ))
        .unwrap();
        let g = graph(&c);
        assert_eq!(
            g.client_secret,
            SecretFrom::File("/run/secrets/graph".into())
        );
        assert_eq!(g.graph_url, "http://127.0.0.1:9");
        assert_eq!(g.login_url, "https://login.microsoftonline.us");
        assert_eq!(g.pim_poll_interval, Duration::from_secs(60));
    }

    #[test]
    fn graph_example_config_parses() {
        let c = Config::parse(
            Path::new("config/graph.example.toml"),
            include_str!("../config/graph.example.toml"),
        )
        .unwrap();
        assert_eq!(
            graph(&c).client_secret,
            SecretFrom::Env("GRAPH_CLIENT_SECRET".into())
        );
        assert_eq!(c.apps.len(), 2);
        assert!(c.apps[1].flatten_nested);
    }

    #[test]
    fn graph_secret_key_missing_or_doubled_is_named() {
        let e = parse(&GRAPH.replace("client_secret_env = \"GRAPH_CLIENT_SECRET\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.client_secret_env"), "{e}");
        assert!(e.contains("client_secret_file"), "{e}");
        let e = parse(&GRAPH.replace(
            "client_secret_env =",
            "client_secret_file = \"/run/secrets/graph\"\nclient_secret_env =",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not both"), "{e}");
        assert!(e.starts_with("test.toml:6:"), "{e}");
    }

    #[test]
    fn graph_bad_values_are_named() {
        let e = parse(&GRAPH.replace(
            "kind = \"graph\"",
            "kind = \"graph\"\ngraph_url = \"graph.microsoft.com\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("test.toml:4: source.graph_url"), "{e}");
        let e = parse(&GRAPH.replace(
            "kind = \"graph\"",
            "kind = \"graph\"\nlogin_url = \"ftp://x\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("source.login_url"), "{e}");
        let e = parse(&GRAPH.replace(
            "kind = \"graph\"",
            "kind = \"graph\"\npim_poll_interval = \"0s\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("source.pim_poll_interval"), "{e}");
        let e = parse(&GRAPH.replace(
            "tenant_id = \"11111111-2222-3333-4444-555555555555\"",
            "tenant_id = \"\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("source.tenant_id"), "{e}");
        let e = parse(&GRAPH.replace("kind = \"graph\"", "kind = \"graph\"\ntenant = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenant"), "{e}");
    }

    #[test]
    fn graph_secret_is_read_from_env_or_file_and_never_shown() {
        let c = parse(&GRAPH.replace("GRAPH_CLIENT_SECRET", "SCIM_SYNC_TEST_SURELY_UNSET_GRAPH"))
            .unwrap();
        let e = graph(&c).client_secret().unwrap_err().to_string();
        assert!(e.contains("source.client_secret_env"), "{e}");
        assert!(e.contains("SCIM_SYNC_TEST_SURELY_UNSET_GRAPH"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("secret");
        std::fs::write(&file, "s3cr3t-value\n").unwrap();
        let mut g = graph(&c).clone();
        g.client_secret = SecretFrom::File(file.clone());
        let s = g.client_secret().unwrap();
        assert_eq!(s.expose(), "s3cr3t-value");
        assert!(!format!("{g:?} {s:?}").contains("s3cr3t"));
        std::fs::write(&file, " \n").unwrap();
        let e = g.client_secret().unwrap_err().to_string();
        assert!(
            e.contains("source.client_secret_file") && e.contains("empty"),
            "{e}"
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }
}
