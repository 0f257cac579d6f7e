//! How the sandbox imitates a real, non-generic SCIM app instead of the generic one: an app
//! without the enterprise User extension, and an app that declares some core User
//! attributes in `/Schemas` but silently does not store them.
//!
//! This module decides what is refused and what is dropped; the store asks it on every
//! User write, and the discovery documents ask it whether the extension is declared. It
//! holds no resources and does no IO. The default [`Quirks`] is the generic app and changes
//! nothing; Groups are never affected.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::patch::Operation;
use super::schema::{
    ENTERPRISE_USER_SCHEMA, Kind, carries_enterprise, find, key_ci, names_enterprise,
};

/// User attributes that are always stored: without them a user cannot be found, matched,
/// (de)activated or typed.
const ALWAYS_STORED: [&str; 4] = ["userName", "id", "active", "schemas"];

/// The ways one sandbox departs from the generic app.
#[derive(Debug, Clone, Default)]
pub(crate) struct Quirks {
    /// The enterprise User extension is not supported: not declared, refused on write.
    pub(crate) without_enterprise: bool,
    /// Canonical names of the core User attributes declared but never stored.
    dropped: Vec<&'static str>,
}

impl Quirks {
    /// Whether the app supports (and declares) the enterprise User extension.
    pub(crate) fn enterprise(&self) -> bool {
        !self.without_enterprise
    }

    /// Stops storing the core User attribute `name` (see [`droppable_attribute`]).
    ///
    /// # Errors
    /// Why `name` cannot be dropped.
    pub(crate) fn drop_attribute(&mut self, name: &str) -> Result<(), String> {
        let name = droppable_attribute(name)?;
        if !self.dropped.contains(&name) {
            self.dropped.push(name);
        }
        Ok(())
    }

    /// Refuses a `POST` or `PUT` User body that carries the enterprise extension when the
    /// app does not support it.
    pub(crate) fn admit_user_body(&self, body: &Map<String, Value>) -> Result<(), ScimError> {
        if self.without_enterprise && carries_enterprise(body) {
            return Err(enterprise_refused());
        }
        Ok(())
    }

    /// Refuses a User `PATCH` with an operation whose path names the enterprise extension
    /// (or one of its attributes) or whose value carries it, when the app does not
    /// support it.
    pub(crate) fn admit_user_patch(&self, ops: &[Operation]) -> Result<(), ScimError> {
        if self.without_enterprise && ops.iter().any(touches_enterprise) {
            return Err(enterprise_refused());
        }
        Ok(())
    }

    /// Removes the dropped attributes from a User about to be stored (matched
    /// case-insensitively).
    pub(crate) fn discard_dropped(&self, attrs: &mut Map<String, Value>) {
        for name in &self.dropped {
            while let Some(key) = key_ci(attrs, name) {
                attrs.remove(&key);
            }
        }
    }
}

/// Whether a PATCH operation's path or value involves the enterprise extension.
fn touches_enterprise(op: &Operation) -> bool {
    // The filter grammar splits `urn:…:2.0:User` into `urn:…:2.0` and `User`, and
    // `urn:…:2.0:User:department` into the extension URN and `department`; joined again,
    // both name the extension.
    let qualified = op
        .path
        .as_ref()
        .and_then(|p| p.urn.as_ref().map(|urn| format!("{urn}:{}", p.attr)));
    qualified.as_deref().is_some_and(names_enterprise)
        || op
            .value
            .as_ref()
            .and_then(Value::as_object)
            .is_some_and(carries_enterprise)
}

/// The refusal of an app without the enterprise extension, worded like the pydantic error
/// of the Django SCIM server it imitates.
fn enterprise_refused() -> ScimError {
    ScimError::invalid_value(format!(
        "Extra inputs are not permitted: {ENTERPRISE_USER_SCHEMA} \
         (this app does not support the enterprise User extension)"
    ))
}

/// The canonical spelling of `name` (matched case-insensitively) if the sandbox can be told
/// to drop it, else why not.
///
/// Droppable: every writable core User attribute except `userName` and `active`, e.g.
/// `displayName`, `title`, `nickName`. Refused: `userName`, `id`, `active` and `schemas`
/// (always stored), the read-only `meta` and `groups`, and names that are not core User
/// attributes.
///
/// # Errors
/// A message naming the attribute and the reason.
pub fn droppable_attribute(name: &str) -> Result<&'static str, String> {
    let name = name.trim();
    if let Some(kept) = ALWAYS_STORED.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        return Err(format!(
            "{kept} cannot be dropped: userName, id, active and schemas are always stored"
        ));
    }
    match find(Kind::User.attrs(), name) {
        Some(def) if def.read_only => Err(format!(
            "{} cannot be dropped: it is read-only, assigned by the sandbox",
            def.name
        )),
        Some(def) => Ok(def.name),
        None => Err(format!(
            "{name:?} is not a core User attribute (such as displayName, title or nickName)"
        )),
    }
}
