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

use rustc_hash::FxHashSet;
use serde_json::Value;

pub mod attr_path;
pub mod learnt;
pub mod profile;

pub use learnt::{Capabilities, Learnt};
pub use profile::Profile;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Shared text (`Arc<str>`): a clone is a reference count, not a copy, so the same id
        /// held by the snapshot, desired and observed state, and every membership that names it,
        /// is stored once where it was read through an [`Interner`].
        #[derive(Clone, Debug, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        // Two clones of one id are equal without reading their text (most comparisons of a
        // plan are of a membership with the user it names); the order is the text's.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if Arc::ptr_eq(&self.0, &other.0) {
                    return std::cmp::Ordering::Equal;
                }
                self.0.cmp(&other.0)
            }
        }

        // The text's hash, as `str` hashes it: a set of ids is searched by `&str` (`Borrow`).
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state);
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// Wraps a raw identifier.
            pub fn new(s: impl Into<String>) -> Self {
                Self(Arc::from(s.into()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether both are clones of one id, holding one text (see [`Interner`]).
            pub fn shares_text(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
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

/// An id as read from JSON: borrowed from the text when it holds no escape, so a list of
/// 700k member ids is read without an allocation each (then interned, see [`Interner`]).
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct IdText<'a>(#[serde(borrow)] pub std::borrow::Cow<'a, str>);

impl IdText<'_> {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Texts already held, so that one read again (a membership naming a user, a group naming a
/// nested group, the same attribute name on every user) shares the held text instead of
/// copying it: at 100k users and 700k memberships the copies would be most of a snapshot.
/// `Interner` holds ids; [`AttrNames`] holds attribute names.
#[derive(Debug)]
pub struct Interner<T = SourceId>(FxHashSet<T>);

/// Attribute names already held, so that every user's attributes share one text per name.
pub type AttrNames = Interner<AttrKey>;

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self(FxHashSet::default())
    }
}

impl<T> Interner<T>
where
    T: Clone + Eq + std::hash::Hash + std::borrow::Borrow<str> + for<'a> From<&'a str>,
{
    /// An interner that already holds `held` (the keys of a snapshot's users and groups).
    pub fn holding<'a>(held: impl IntoIterator<Item = &'a T>) -> Self
    where
        T: 'a,
    {
        Self(held.into_iter().cloned().collect())
    }

    /// `raw` as the text already held, if it is.
    pub fn get(&self, raw: &str) -> Option<T> {
        self.0.get(raw).cloned()
    }

    /// `raw` as the text already held, or a new one, held from now on.
    pub fn intern(&mut self, raw: &str) -> T {
        if let Some(held) = self.0.get(raw) {
            return held.clone();
        }
        let new = T::from(raw);
        self.0.insert(new.clone());
        new
    }

    /// `text`, as the same text already held, or itself, held from now on.
    pub fn share(&mut self, text: &T) -> T {
        if let Some(held) = self.0.get(text.borrow()) {
            return held.clone();
        }
        self.0.insert(text.clone());
        text.clone()
    }
}

impl AttrNames {
    /// `attrs` keyed by held names.
    pub fn keyed<K: AsRef<str>>(
        &mut self,
        attrs: impl IntoIterator<Item = (K, Value)>,
    ) -> SourceAttrs {
        attrs
            .into_iter()
            .map(|(k, v)| (self.intern(k.as_ref()), v))
            .collect()
    }
}

/// A SCIM attribute path of the mapping (`userName`, `name.givenName`,
/// `emails[type eq "work"].value`, `urn:…:enterprise:2.0:User:department`).
///
/// Shared rather than owned: the same ten paths key every user's attributes, and at 100k users
/// owned copies would cost more than the values themselves.
pub type AttrKey = Arc<str>;

/// The SCIM attributes of one user, flattened to attribute paths; values are the JSON values
/// to send. Only `scim` turns this into a SCIM resource and back.
pub type Attrs = BTreeMap<AttrKey, Value>;

/// A source user's attributes by Graph name, keyed like [`Attrs`] by shared text: the same
/// ten names key every user.
pub type SourceAttrs = BTreeMap<AttrKey, Value>;

/// Attributes (a user's, desired, observed or the source's) from a JSON object, each name its
/// own key; anything but an object gives none. For tests, benches and tools.
pub fn attrs_from_json(v: Value) -> Attrs {
    match v {
        Value::Object(m) => m.into_iter().map(|(k, v)| (AttrKey::from(k), v)).collect(),
        _ => Attrs::new(),
    }
}

/// One user as the source sees it: its id and its attributes under their Graph names.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceUser {
    /// Source object id.
    pub id: SourceId,
    /// Attributes by Graph name (`userPrincipalName`, `accountEnabled`, `jobTitle`, …).
    pub attrs: SourceAttrs,
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

impl Directory {
    /// Makes every membership and eligibility share the id of the user or group it names
    /// (see [`Interner`]), and every user's attributes one text per name, for a source that
    /// assembles its snapshot from separate reads.
    pub fn share_ids(&mut self) {
        let mut names = AttrNames::default();
        for u in self.users.values_mut() {
            // Rebuilt only when some name is not the held text.
            if u.attrs.keys().any(|k| !Arc::ptr_eq(&names.share(k), k)) {
                u.attrs = std::mem::take(&mut u.attrs)
                    .into_iter()
                    .map(|(k, v)| (names.share(&k), v))
                    .collect();
            }
        }
        let mut held = Interner::holding(self.users.keys().chain(self.groups.keys()));
        for g in self.groups.values_mut() {
            for id in g.members.iter_mut().chain(g.eligible.iter_mut()) {
                *id = held.share(id);
            }
        }
    }
}

/// A user as the app should hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredUser {
    /// Source id, the anchor that links the user to its SCIM twin.
    pub source_id: SourceId,
    /// Mapped SCIM attributes, always including `userName` and `active`; shared with the
    /// observed user when the app holds exactly these (see `Store::load_observed_users`).
    pub attrs: Arc<Attrs>,
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
    /// Attributes as last sent and confirmed (including `active`); the desired user's own
    /// when they are the same, so an unchanged user's attributes are held once.
    pub attrs: Arc<Attrs>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_by_text_whether_shared_or_not() {
        let a = SourceId::from("u-1");
        let copy = SourceId::from("u-1");
        assert_eq!(a, a.clone());
        assert_eq!(a, copy);
        assert!(!a.shares_text(&copy));
        assert_eq!(a.cmp(&copy), std::cmp::Ordering::Equal);
        assert!(SourceId::from("u-0") < a && a < SourceId::from("u-2"));
    }

    #[test]
    fn a_snapshot_names_each_user_and_group_with_one_text() {
        let user = |id: &str| SourceUser {
            id: id.into(),
            attrs: SourceAttrs::new(),
        };
        let group = |id: &str, members: &[&str]| SourceGroup {
            id: id.into(),
            display_name: id.to_uppercase(),
            members: members.iter().map(|m| SourceId::from(*m)).collect(),
            eligible: vec!["u1".into()],
        };
        let mut dir = Directory::default();
        for u in ["u1", "u2"] {
            dir.users.insert(u.into(), user(u));
        }
        for g in [group("g1", &["u1", "g2"]), group("g2", &["u2", "u-gone"])] {
            dir.groups.insert(g.id.clone(), g);
        }
        let before = dir.clone();
        dir.share_ids();
        assert_eq!(dir, before, "the same snapshot");
        let key = |id: &str| dir.users.get_key_value(id).map(|(k, _)| k).unwrap();
        let g1 = &dir.groups["g1"];
        assert!(g1.members[0].shares_text(key("u1")));
        assert!(g1.eligible[0].shares_text(key("u1")));
        let (g2_key, g2) = dir.groups.get_key_value("g2").unwrap();
        assert!(g1.members[1].shares_text(g2_key), "a nested group");
        assert!(g2.members[0].shares_text(key("u2")));

        let mut held = Interner::holding(dir.users.keys());
        assert!(held.intern("u2").shares_text(key("u2")));
        let new = held.intern("u3");
        assert!(
            held.intern("u3").shares_text(&new),
            "held from its first reading"
        );
    }
}
