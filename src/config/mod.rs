//! Configuration: the TOML file of SPEC §3, parsed and validated into a [`Config`].
//!
//! Every error names the file, the key and, where the file has one, the line. Unknown keys are
//! errors. Secrets are never read from the file, only the names of the environment variables
//! that hold them; [`AppConfig::token`] reads the variable when a command needs it, so commands
//! that need no secret (`status`) work without them. A [`Secret`] never prints its value.
//!
//! [`Config::parse`] deserializes the whole file, then hands each section to its validator,
//! in a fixed order: `service` (`[service]`), `source` (`[source]`), `apps` (each
//! `[[apps]]` and its `[apps.attributes]`); `duration` reads durations and `size` sizes. Each validator owns
//! its section's types and checks only that section. This module owns the errors, secrets
//! and line numbers; it must not depend on `mapping` or anything above `model`.

mod apps;
mod duration;
mod service;
mod size;
mod source;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use apps::{
    AppConfig, DEFAULT_MAX_RESPONSE, MAX_MAX_RESPONSE, MIN_MAX_RESPONSE, Overflow, PushLimit,
};
pub use duration::{Dur, parse_duration};
pub use service::{DEFAULT_STATE, ServiceConfig, StateFrom};
pub use size::parse_size;
pub use source::{GraphConfig, SecretFrom, SourceConfig};

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

/// Reads the secret held by environment variable `var`; `key` names the config key that
/// names the variable, and `what` the secret's use, in the error.
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
        let cfg = ConfigText { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| cfg.syntax(&e))?;
        let service = service::validate(&cfg, raw.service)?;
        let source = source::validate(&cfg, raw.source)?;
        let apps = apps::validate(&cfg, raw.apps)?;
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

/// The file as written: every key known, every value of the right form, nothing validated.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    service: service::RawService,
    source: source::RawSource,
    #[serde(default)]
    apps: Vec<apps::RawApp>,
}

/// The config text being validated, for the file name and line of each error.
struct ConfigText<'a> {
    /// The file, only used in messages.
    path: &'a Path,
    /// Its text, to turn spans and keys into line numbers.
    text: &'a str,
}

impl ConfigText<'_> {
    /// An [`Error::Syntax`] at the parser's span, or with no line when it gave none.
    fn syntax(&self, e: &toml::de::Error) -> Error {
        Error::Syntax {
            path: self.path.to_owned(),
            line: e.span().map(|s| line_of(self.text, s.start)).unwrap_or(0),
            message: e.message().trim().to_owned(),
        }
    }

    /// An [`Error::Invalid`] at the line of a value whose span the parser kept.
    fn invalid_at(&self, span: Range<usize>, key: String, message: String) -> Error {
        self.invalid_on(line_of(self.text, span.start), key, message)
    }

    /// An [`Error::Invalid`] at the line of the first `name =` in the file (see
    /// [`find_key_line`]).
    fn invalid_at_key(&self, name: &str, key: String, message: String) -> Error {
        self.invalid_on(find_key_line(self.text, name), key, message)
    }

    /// An [`Error::Invalid`] with no line (about something the file lacks).
    fn invalid_nowhere(&self, key: String, message: String) -> Error {
        self.invalid_on(0, key, message)
    }

    fn invalid_on(&self, line: usize, key: String, message: String) -> Error {
        Error::Invalid {
            path: self.path.to_owned(),
            line,
            key,
            message,
        }
    }
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
