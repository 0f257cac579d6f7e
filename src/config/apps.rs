//! `[[apps]]` and each app's `[apps.attributes]`: the SCIM apps, as written ([`RawApp`], with
//! its defaults) and validated ([`AppConfig`]).
//!
//! Each app is checked key by key, in a fixed order (name, `base_url`, `groups`, `push_groups`,
//! `concurrency`, `timeout`, `max_response`, `[apps.attributes]`, `profile`, `matching`,
//! `push_limit`, `overflow`, `verify_interval`), so the first
//! error reported for a file never changes. Attribute paths are checked with the grammar of
//! [`crate::model::attr_path`]; this module must not depend on `mapping`, nor read an app's
//! token while validating (only [`AppConfig::token`] does, when a command needs it).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::size::RawSize;
use super::{ConfigText, Dur, Error, Secret, read_secret};
use crate::model::attr_path::{REQUIRED_USER_PATHS, check_scim_path, mapped_paths};
use crate::model::{AppName, Deprovision, Profile, SourceId};

/// `max_response` when the app does not set it: 32 MiB (the same bound as
/// `http::DEFAULT_MAX_RESPONSE`, which this module may not import; a test checks they agree).
pub const DEFAULT_MAX_RESPONSE: u64 = 32 * MIB;
/// The smallest `max_response` accepted: a SCIM error or a short page must always fit.
pub const MIN_MAX_RESPONSE: u64 = MIB;
/// The largest `max_response` accepted: every request in flight may hold this much.
pub const MAX_MAX_RESPONSE: u64 = 1024 * MIB;
const MIB: u64 = 1024 * 1024;

/// `push_limit`: the per-app quota for activation pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLimit {
    /// Activations allowed at once after a quiet spell.
    pub burst: NonZeroU32,
    /// Time in which `burst` activations are replenished.
    pub per: Duration,
}

/// `overflow`: what happens to an activation the app's `push_limit` refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Deferred to the app's next cycle (Entra's rule, the default).
    #[default]
    NextCycle,
    /// Pushed as soon as the limiter allows, oldest first, never above the limit; the next
    /// cycle applies whatever is left.
    Drain,
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
    /// The assigned groups whose plain membership changes are pushed at once (service mode,
    /// file source: the directory file is watched).
    pub push_groups: Vec<SourceId>,
    /// Activation push quota.
    pub push_limit: PushLimit,
    /// What happens to an activation over the quota.
    pub overflow: Overflow,
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
    /// Largest response body read from the app, in bytes; a larger one is refused.
    pub max_response: u64,
    /// `[apps.attributes]` overrides: SCIM path → source attribute (`""` drops the default entry).
    pub attributes: BTreeMap<String, String>,
    /// Service mode: a cycle reads the app back and repairs drift at most this often
    /// (`verify_interval`); `None`: never (`"0s"`).
    pub verify_interval: Option<Duration>,
    /// What kind of SCIM app it is (`profile`).
    pub profile: Profile,
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

/// One `[[apps]]` entry as written. Keys whose errors point at a line keep their span; a
/// defaulted key's span is `0..0` (line 1).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    name: Spanned<String>,
    base_url: Spanned<String>,
    token_env: String,
    groups: Spanned<Vec<String>>,
    #[serde(default = "default_push_groups")]
    push_groups: Spanned<Vec<String>>,
    #[serde(default = "default_push_limit")]
    push_limit: Spanned<RawPushLimit>,
    #[serde(default = "default_overflow")]
    overflow: Spanned<String>,
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
    #[serde(default = "default_max_response")]
    max_response: Spanned<RawSize>,
    #[serde(default = "default_attributes")]
    attributes: Spanned<BTreeMap<String, String>>,
    #[serde(default = "default_verify_interval")]
    verify_interval: Dur,
    #[serde(default = "default_profile")]
    profile: Spanned<String>,
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
fn default_push_groups() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}
fn default_overflow() -> Spanned<String> {
    Spanned::new(0..0, "next-cycle".into())
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
fn default_profile() -> Spanned<String> {
    Spanned::new(0..0, "generic".into())
}
fn default_verify_interval() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_response() -> Spanned<RawSize> {
    Spanned::new(
        0..0,
        RawSize(toml::Value::Integer(DEFAULT_MAX_RESPONSE.cast_signed())),
    )
}

/// Validates every `[[apps]]` entry in file order (names unique), then that there is one.
pub(super) fn validate(cfg: &ConfigText<'_>, raw: Vec<RawApp>) -> Result<Vec<AppConfig>, Error> {
    let mut names = BTreeSet::new();
    let mut apps = Vec::with_capacity(raw.len());
    for app in raw {
        apps.push(validate_app(cfg, app, &mut names)?);
    }
    if apps.is_empty() {
        return Err(cfg.invalid_nowhere(
            "apps".into(),
            "no [[apps]] configured: add at least one SCIM app".into(),
        ));
    }
    Ok(apps)
}

/// Validates one `[[apps]]` entry; `names` holds the names of the entries before it.
fn validate_app(
    cfg: &ConfigText<'_>,
    app: RawApp,
    names: &mut BTreeSet<String>,
) -> Result<AppConfig, Error> {
    let name = name(cfg, app.name, names)?;
    let base_url = base_url(cfg, &name, app.base_url)?;
    let groups = groups(cfg, &name, app.groups)?;
    let push_groups = push_groups(cfg, &name, app.push_groups, &groups)?;
    let concurrency = concurrency(cfg, &name, app.concurrency)?;
    let timeout = timeout(cfg, &name, app.timeout)?;
    let max_response = max_response(cfg, &name, app.max_response)?;
    let attributes_span = app.attributes.span();
    let attributes = attributes(cfg, &name, app.attributes)?;
    let profile = profile(cfg, &name, app.profile, &attributes, attributes_span)?;
    let matching = matching(cfg, &name, app.matching, &attributes, profile)?;
    let push_limit = push_limit(cfg, &name, app.push_limit)?;
    let overflow = overflow(cfg, &name, app.overflow)?;
    let verify_interval = verify_interval(cfg, &name, app.verify_interval)?;
    Ok(AppConfig {
        name: AppName::new(name),
        base_url,
        token_env: app.token_env,
        groups,
        push_groups,
        push_limit,
        overflow,
        deprovision: app.deprovision,
        matching,
        max_deprovisions: app.max_deprovisions,
        flatten_nested: app.flatten_nested,
        concurrency,
        timeout,
        max_response,
        attributes,
        verify_interval,
        profile,
    })
}

/// `apps[{name}].{k}`, the key of one of an app's settings in messages.
fn key(name: &str, k: &str) -> String {
    format!("apps[{name}].{k}")
}

/// `name`: `[a-z0-9-]+`, and not the name of an earlier app.
fn name(
    cfg: &ConfigText<'_>,
    raw: Spanned<String>,
    names: &mut BTreeSet<String>,
) -> Result<String, Error> {
    let span = raw.span();
    let name = raw.into_inner();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(cfg.invalid_at(
            span,
            "apps.name".into(),
            format!("{name:?} must use only a-z, 0-9 and -"),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(cfg.invalid_at(
            span,
            key(&name, "name"),
            "two apps have this name; names must be unique".into(),
        ));
    }
    Ok(name)
}

/// `base_url`: an http(s) URL with a host, kept without a trailing `/`.
fn base_url(cfg: &ConfigText<'_>, name: &str, raw: Spanned<String>) -> Result<String, Error> {
    let span = raw.span();
    let base_url = raw.into_inner().trim_end_matches('/').to_owned();
    match reqwest::Url::parse(&base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(base_url),
        _ => Err(cfg.invalid_at(
            span,
            key(name, "base_url"),
            format!("{base_url:?} is not an http(s) URL"),
        )),
    }
}

/// `groups`: at least one, since an app with none would have every user deprovisioned.
fn groups(
    cfg: &ConfigText<'_>,
    name: &str,
    raw: Spanned<Vec<String>>,
) -> Result<Vec<SourceId>, Error> {
    let span = raw.span();
    let groups: Vec<SourceId> = raw.into_inner().into_iter().map(SourceId::new).collect();
    if groups.is_empty() {
        return Err(cfg.invalid_at(
            span,
            key(name, "groups"),
            "assign at least one group: an app with no groups would have every user deprovisioned"
                .into(),
        ));
    }
    Ok(groups)
}

/// `push_groups`: each one assigned (in `groups`), none twice.
fn push_groups(
    cfg: &ConfigText<'_>,
    name: &str,
    raw: Spanned<Vec<String>>,
    groups: &[SourceId],
) -> Result<Vec<SourceId>, Error> {
    let span = raw.span();
    let mut out: Vec<SourceId> = Vec::new();
    for g in raw.into_inner().into_iter().map(SourceId::new) {
        if !groups.contains(&g) {
            return Err(cfg.invalid_at(
                span,
                key(name, "push_groups"),
                format!("group {g} is not assigned to the app: add it to groups first"),
            ));
        }
        if out.contains(&g) {
            return Err(cfg.invalid_at(
                span,
                key(name, "push_groups"),
                format!("group {g} is listed twice"),
            ));
        }
        out.push(g);
    }
    Ok(out)
}

/// `concurrency`: 1 to 64 requests in flight.
fn concurrency(cfg: &ConfigText<'_>, name: &str, raw: Spanned<usize>) -> Result<usize, Error> {
    let span = raw.span();
    let concurrency = raw.into_inner();
    if !(1..=64).contains(&concurrency) {
        return Err(cfg.invalid_at(
            span,
            key(name, "concurrency"),
            format!("{concurrency} is out of range 1..=64"),
        ));
    }
    Ok(concurrency)
}

/// `verify_interval`: `"0s"` (never), or at least a minute.
fn verify_interval(cfg: &ConfigText<'_>, name: &str, raw: Dur) -> Result<Option<Duration>, Error> {
    match raw.0 {
        d if d.is_zero() => Ok(None),
        d if d < Duration::from_secs(60) => Err(cfg.invalid_at_key(
            "verify_interval",
            key(name, "verify_interval"),
            "must be at least 1m (reading the app back takes a request per object), or \"0s\" to never verify".into(),
        )),
        d => Ok(Some(d)),
    }
}

/// `timeout`: more than zero.
fn timeout(cfg: &ConfigText<'_>, name: &str, raw: Dur) -> Result<Duration, Error> {
    if raw.0.is_zero() {
        return Err(cfg.invalid_at_key(
            "timeout",
            key(name, "timeout"),
            "must be more than zero".into(),
        ));
    }
    Ok(raw.0)
}

/// `max_response`: a size (`"32MiB"`, `"100MB"`, or bytes) from 1 MiB to 1 GiB.
fn max_response(cfg: &ConfigText<'_>, name: &str, raw: Spanned<RawSize>) -> Result<u64, Error> {
    let span = raw.span();
    let at_fault =
        |message: String| cfg.invalid_at(span.clone(), key(name, "max_response"), message);
    let bytes = raw.get_ref().bytes().map_err(at_fault)?;
    if !(MIN_MAX_RESPONSE..=MAX_MAX_RESPONSE).contains(&bytes) {
        return Err(at_fault(format!(
            "{bytes} bytes is out of range 1MiB..=1GiB (the default is 32MiB)"
        )));
    }
    Ok(bytes)
}

/// `[apps.attributes]`: every key a supported SCIM attribute path, and the required paths
/// never dropped (`""`).
fn attributes(
    cfg: &ConfigText<'_>,
    name: &str,
    raw: Spanned<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, Error> {
    let span = raw.span();
    let attributes = raw.into_inner();
    for (scim_path, source_attr) in &attributes {
        let at_fault = |message: String| {
            cfg.invalid_at(
                span.clone(),
                key(name, &format!("attributes.{scim_path:?}")),
                message,
            )
        };
        if let Err(why) = check_scim_path(scim_path) {
            return Err(at_fault(why));
        }
        if source_attr.is_empty() && REQUIRED_USER_PATHS.contains(&scim_path.as_str()) {
            return Err(at_fault(
                "this attribute is required and cannot be dropped".into(),
            ));
        }
    }
    Ok(attributes)
}

/// `profile`: a known kind of app, whose mapping (defaults and overrides) maps only what the
/// app stores, every attribute it requires, and one value of each attribute it takes one of.
fn profile(
    cfg: &ConfigText<'_>,
    name: &str,
    raw: Spanned<String>,
    attributes: &BTreeMap<String, String>,
    attributes_span: std::ops::Range<usize>,
) -> Result<Profile, Error> {
    let span = raw.span();
    let Some(profile) = Profile::parse(raw.get_ref()) else {
        return Err(cfg.invalid_at(
            span,
            key(name, "profile"),
            format!(
                "{:?} is not a profile: use {}",
                raw.get_ref(),
                Profile::VALUES
            ),
        ));
    };
    let at_fault = |path: &str, message: String| {
        cfg.invalid_at(
            attributes_span.clone(),
            key(name, &format!("attributes.{path:?}")),
            message,
        )
    };
    let mapped = mapped_paths(attributes);
    let mut single: BTreeMap<&str, &str> = BTreeMap::new();
    for path in &mapped {
        if let Some(why) = profile.refuses(path) {
            return Err(at_fault(
                path,
                format!("{why}; map another attribute, or drop this one with \"\""),
            ));
        }
        if let Some(attr) = profile.single_valued(path)
            && let Some(first) = single.insert(attr, path)
        {
            return Err(at_fault(
                path,
                format!(
                    "profile {profile} takes one value of {attr}, and {first:?} is mapped too; drop one with \"\""
                ),
            ));
        }
    }

    for required in profile.required_user_paths() {
        if !mapped.iter().any(|p| p == required) {
            return Err(at_fault(
                required,
                format!("profile {profile} requires this attribute; it cannot be dropped"),
            ));
        }
    }
    Ok(profile)
}

/// `matching`: a single-valued SCIM path the app maps (after its overrides), and one the
/// profile can look users up by.
fn matching(
    cfg: &ConfigText<'_>,
    name: &str,
    raw: Spanned<String>,
    attributes: &BTreeMap<String, String>,
    profile: Profile,
) -> Result<String, Error> {
    let span = raw.span();
    let matching = raw.into_inner();
    let mapped = mapped_paths(attributes);
    if matching.contains('[') || !mapped.iter().any(|p| p == &matching) {
        return Err(cfg.invalid_at(
            span,
            key(name, "matching"),
            format!(
                "{matching:?} must be a single-valued SCIM attribute of the mapping (e.g. userName, externalId)"
            ),
        ));
    }
    if !profile.can_match_on(&matching) {
        return Err(cfg.invalid_at(
            span,
            key(name, "matching"),
            format!(
                "profile {profile} looks users up by userName or externalId only, not {matching:?}"
            ),
        ));
    }
    Ok(matching)
}

/// `push_limit`: `per` more than zero (`burst` is non-zero by type).
fn push_limit(
    cfg: &ConfigText<'_>,
    name: &str,
    raw: Spanned<RawPushLimit>,
) -> Result<PushLimit, Error> {
    let push = raw.into_inner();
    if push.per.0.is_zero() {
        return Err(cfg.invalid_at_key(
            "push_limit",
            key(name, "push_limit.per"),
            "must be more than zero".into(),
        ));
    }
    Ok(PushLimit {
        burst: push.burst,
        per: push.per.0,
    })
}

/// `overflow`: `"next-cycle"` or `"drain"`.
fn overflow(cfg: &ConfigText<'_>, name: &str, raw: Spanned<String>) -> Result<Overflow, Error> {
    match raw.get_ref().as_str() {
        "next-cycle" => Ok(Overflow::NextCycle),
        "drain" => Ok(Overflow::Drain),
        other => Err(cfg.invalid_at(
            raw.span(),
            key(name, "overflow"),
            format!(
                "{other:?} is not an overflow rule: write \"next-cycle\" (deferred activations wait for the next cycle) or \"drain\" (pushed as soon as push_limit allows)"
            ),
        )),
    }
}
