//! How the sandbox imitates a real, non-generic SCIM app instead of the generic one: an app
//! without the enterprise User extension.
//!
//! This module decides what is refused; the store asks it on every
//! User write, and the discovery documents ask it whether the extension is declared. It
//! holds no resources and does no IO. The default [`Quirks`] is the generic app and changes
//! nothing; Groups are never affected.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::patch::Operation;
use super::schema::{ENTERPRISE_USER_SCHEMA, carries_enterprise, names_enterprise};

/// The ways one sandbox departs from the generic app.
#[derive(Debug, Clone, Default)]
pub(crate) struct Quirks {
    /// The enterprise User extension is not supported: not declared, refused on write.
    pub(crate) without_enterprise: bool,
}

impl Quirks {
    /// Whether the app supports (and declares) the enterprise User extension.
    pub(crate) fn enterprise(&self) -> bool {
        !self.without_enterprise
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
