//! Domain vocabulary shared by every stage: identifiers, the source snapshot, and the
//! desired and observed state of one app.
//!
//! Nothing here does IO or knows a wire format. The source modules turn Graph or file JSON
//! into a [`Directory`]; `mapping` turns a directory into [`Desired`] state per app; the store
//! loads [`Observed`] state; `plan` compares the two. [`attr_path`] holds the grammar of the
//! SCIM attribute paths that key [`Attrs`], and the default mapping table that names them;
//! [`profile`] what kind of app an app is and what it stores; [`learnt`] what scim-sync has
//! learnt about an app's schema.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

pub mod attr_path;
pub mod learnt;
pub mod profile;

pub use learnt::{Capabilities, Learnt};
pub use profile::Profile;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a raw identifier.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_newtype!(
    /// The name of a configured app (`[a-z0-9-]+`, validated by `config`).
    AppName
);
id_newtype!(
    /// The id of a user or group in the source directory (Entra object id or file id).
    SourceId
);
id_newtype!(
    /// The id the SCIM app assigned to a resource (`id` in RFC 7643).
    ScimId
);

/// A SCIM attribute path of the mapping (`userName`, `name.givenName`,
/// `emails[type eq "work"].value`, `urn:…:enterprise:2.0:User:department`).
///
/// Shared rather than owned: the same ten paths key every user's attributes, and at 100k users
/// owned copies would cost more than the values themselves.
pub type AttrKey = Arc<str>;

/// The SCIM attributes of one user, flattened to attribute paths; values are the JSON values
/// to send. Only `scim` turns this into a SCIM resource and back.
pub type Attrs = BTreeMap<AttrKey, Value>;

/// One user as the source sees it: its id and its attributes under their Graph names.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceUser {
    /// Source object id.
    pub id: SourceId,
    /// Attributes by Graph name (`userPrincipalName`, `accountEnabled`, `jobTitle`, …).
    pub attrs: serde_json::Map<String, Value>,
}

/// One group as the source sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceGroup {
    /// Source object id.
    pub id: SourceId,
    /// Display name.
    pub display_name: String,
    /// Direct members: user ids, or group ids for nested groups.
    pub members: Vec<SourceId>,
    /// PIM-eligible users: not members until they activate.
    pub eligible: Vec<SourceId>,
}

/// A complete, validated snapshot of the source directory, read once per cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    /// Users by id.
    pub users: BTreeMap<SourceId, SourceUser>,
    /// Groups by id.
    pub groups: BTreeMap<SourceId, SourceGroup>,
}

/// A user as the app should hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredUser {
    /// Source id, the anchor that links the user to its SCIM twin.
    pub source_id: SourceId,
    /// Mapped SCIM attributes, always including `userName` and `active`.
    pub attrs: Attrs,
}

impl DesiredUser {
    /// The `userName` the user is provisioned with.
    pub fn user_name(&self) -> &str {
        self.attrs
            .get("userName")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A group as the app should hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredGroup {
    /// Source id of the group.
    pub source_id: SourceId,
    /// `displayName` to provision.
    pub display_name: String,
    /// In-scope members (source user ids).
    pub members: BTreeSet<SourceId>,
}

/// Everything one app should hold: the output of `mapping`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// In-scope users by source id.
    pub users: BTreeMap<SourceId, DesiredUser>,
    /// Assigned groups by source id.
    pub groups: BTreeMap<SourceId, DesiredGroup>,
}

/// A user in scope that cannot be provisioned (for instance no value for `userName`).
/// It is left as the app holds it, never deprovisioned for this reason. `mapping` reports
/// these next to the [`Desired`] state; `plan` leaves them alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmapped {
    /// The user.
    pub source_id: SourceId,
    /// What is missing.
    pub reason: String,
}

/// How we came to manage an object in the app. Only managed objects are ever changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// We created it with a POST.
    Created,
    /// It existed already; we found it by lookup (or after a `409`) and took it over.
    Adopted,
}

impl Origin {
    /// Stable text form, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Created => "created",
            Origin::Adopted => "adopted",
        }
    }

    /// Parses the stored text form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(Origin::Created),
            "adopted" => Some(Origin::Adopted),
            _ => None,
        }
    }
}

/// A user the app holds, as last confirmed by the app.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedUser {
    /// The app's id for the user.
    pub scim_id: ScimId,
    /// Whether we created or adopted it.
    pub origin: Origin,
    /// Attributes as last sent and confirmed (including `active`).
    pub attrs: Attrs,
}

impl ObservedUser {
    /// Whether the app holds the user as active.
    pub fn is_active(&self) -> bool {
        self.attrs
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
}

/// A group the app holds, as last confirmed by the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedGroup {
    /// The app's id for the group.
    pub scim_id: ScimId,
    /// Whether we created or adopted it.
    pub origin: Origin,
    /// `displayName` as last confirmed.
    pub display_name: String,
    /// Members we know the app holds (source user ids).
    pub members: BTreeSet<SourceId>,
}

/// What the store remembers of one app.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Managed users by source id.
    pub users: BTreeMap<SourceId, ObservedUser>,
    /// Managed groups by source id.
    pub groups: BTreeMap<SourceId, ObservedGroup>,
    /// Members of managed groups that are not users scim-sync manages (by group, their app
    /// ids): known only from a read-back of the app (drift), removed from the group by the
    /// plan; the users themselves are never touched.
    pub foreign: BTreeMap<SourceId, BTreeSet<ScimId>>,
}

/// What to do with a user who leaves an app's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deprovision {
    /// `PATCH active=false`; the user is re-enabled when it returns.
    Disable,
    /// `DELETE /Users/{id}`.
    Delete,
}
