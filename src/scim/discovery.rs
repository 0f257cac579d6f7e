//! What an app says it supports (RFC 7643 §5–7): `/ServiceProviderConfig`, `/ResourceTypes`
//! and `/Schemas`, read with GETs only, for `check-config --probe` and for a cycle's first
//! contact with an app (`apply::learnt` keeps what was learnt as a [`Learnt`]).
//!
//! An endpoint the app does not serve (`404`, `501`, or an answer that is no JSON object) is
//! noted, not an error: such an app is taken as RFC core plus the enterprise extension, so
//! nothing is reported as undeclared for it. The capabilities shape the client's requests
//! ([`ScimClient::follow`]): a listing's page size, and lookups without filters.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Error, ScimClient};
use crate::model::{Capabilities, Learnt};

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// What an app declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// `filter.supported` and `filter.maxResults`.
    pub filter: Option<(bool, Option<u64>)>,
    /// `patch.supported`.
    pub patch: Option<bool>,
    /// `bulk.supported` and `bulk.maxOperations`.
    pub bulk: Option<(bool, Option<u64>)>,
    /// The resource types served (`name` → `endpoint`); `None`: `/ResourceTypes` not served.
    pub resource_types: Option<BTreeMap<String, String>>,
    /// The schema extensions of the User resource type; `None`: not known.
    pub user_extensions: Option<BTreeSet<String>>,
    /// Each served schema's attributes, lower case, sub-attributes as `name.sub`; `None`:
    /// `/Schemas` not served.
    pub schemas: Option<BTreeMap<String, BTreeSet<String>>>,
    /// What could not be read, one line each.
    pub notes: Vec<String>,
}

impl ScimClient {
    /// Reads the app's discovery endpoints (GETs only).
    ///
    /// # Errors
    /// [`Error`] when the app cannot be reached or refuses the token; an endpoint it does
    /// not serve is a note in the result instead.
    pub async fn discover(&self) -> Result<Discovery, Error> {
        let mut d = Discovery::default();
        match self.discovery_document("/ServiceProviderConfig").await? {
            Some(spc) => {
                let flag = |k: &str| spc[k]["supported"].as_bool();
                d.filter = flag("filter").map(|on| (on, spc["filter"]["maxResults"].as_u64()));
                d.patch = flag("patch");
                d.bulk = flag("bulk").map(|on| (on, spc["bulk"]["maxOperations"].as_u64()));
            }
            None => d.notes.push("/ServiceProviderConfig is not served".into()),
        }
        match self.discovery_document("/ResourceTypes").await? {
            Some(rt) => {
                let mut types = BTreeMap::new();
                for r in resources(&rt) {
                    let name = r["name"].as_str().unwrap_or_default().to_owned();
                    if r["schema"].as_str() == Some(USER_SCHEMA) || name == "User" {
                        d.user_extensions = Some(
                            r["schemaExtensions"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|e| e["schema"].as_str().map(str::to_owned))
                                .collect(),
                        );
                    }
                    types.insert(name, r["endpoint"].as_str().unwrap_or_default().to_owned());
                }
                d.resource_types = Some(types);
            }
            None => d.notes.push("/ResourceTypes is not served".into()),
        }
        match self.discovery_document("/Schemas").await? {
            Some(s) => {
                let mut schemas = BTreeMap::new();
                for schema in resources(&s) {
                    let Some(id) = schema["id"].as_str() else {
                        continue;
                    };
                    let mut attrs = BTreeSet::new();
                    for a in schema["attributes"].as_array().into_iter().flatten() {
                        let Some(name) = a["name"].as_str().map(str::to_lowercase) else {
                            continue;
                        };
                        for sub in a["subAttributes"].as_array().into_iter().flatten() {
                            if let Some(sub) = sub["name"].as_str() {
                                attrs.insert(format!("{name}.{}", sub.to_lowercase()));
                            }
                        }
                        attrs.insert(name);
                    }
                    schemas.insert(id.to_owned(), attrs);
                }
                // Without the core User schema the answer describes nothing to judge the
                // mapping by (an app answering every GET alike): taken as not served.
                if schemas.contains_key(USER_SCHEMA) {
                    d.schemas = Some(schemas);
                } else {
                    d.notes
                        .push(format!("/Schemas does not describe {USER_SCHEMA}"));
                }
            }
            None => d.notes.push("/Schemas is not served".into()),
        }
        Ok(d)
    }

    /// Shapes this client's requests by what the app declared: pages no larger than its
    /// `filter.maxResults`; no filtered lookups when it says `filter.supported: false` (they
    /// list and match locally instead).
    pub fn follow(&self, caps: &Capabilities) {
        if caps.filter == Some(false) {
            self.set_filters_supported(false);
        }
        if let Some(max) = caps.max_results {
            self.set_max_results(max);
        }
    }

    /// A discovery document, or `None` when the app does not serve it.
    async fn discovery_document(&self, path: &str) -> Result<Option<Value>, Error> {
        match self.get_resource(path.to_owned()).await {
            Ok(Some(v)) if v.is_object() || v.is_array() => Ok(Some(v)),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.status(), Some(400 | 403 | 405 | 501)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The resources of a discovery answer: a ListResponse's `Resources`, or a bare array.
fn resources(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        _ => v["Resources"].as_array().cloned().unwrap_or_default(),
    }
}

impl Discovery {
    /// What `/ServiceProviderConfig` said, in the store's vocabulary.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            filter: self.filter.map(|(on, _)| on),
            max_results: self.filter.and_then(|(_, max)| max),
            patch: self.patch,
            bulk: self.bulk.map(|(on, _)| on),
            bulk_max_operations: self.bulk.and_then(|(_, max)| max),
        }
    }

    /// What was learnt for `mapped` paths under `config` (see [`Learnt::config_key`]), at
    /// `now`: capabilities, notes and the undeclared paths with why; nothing read back yet.
    pub fn learnt<'a>(
        &self,
        config: String,
        mapped: impl IntoIterator<Item = &'a str>,
        now: String,
    ) -> Learnt {
        Learnt {
            config,
            discovered_at: now,
            capabilities: self.capabilities(),
            notes: self.notes.clone(),
            undeclared: self.undeclared_with_reasons(mapped).into_iter().collect(),
            ..Learnt::default()
        }
    }

    /// The mapped SCIM paths (`userName`, `name.givenName`, `emails[type eq "work"].value`,
    /// `urn:…:enterprise:2.0:User:department`) the app does not declare, each with why, as
    /// `path (why)` lines. Nothing when the app serves no `/Schemas` (it is taken as RFC core
    /// plus enterprise).
    pub fn undeclared<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        self.undeclared_with_reasons(paths)
            .into_iter()
            .map(|(path, why)| format!("{path} ({why})"))
            .collect()
    }

    /// [`Discovery::undeclared`] as (path, why) pairs.
    pub fn undeclared_with_reasons<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, String)> {
        let Some(schemas) = &self.schemas else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for path in paths {
            // Common attributes belong to every resource (RFC 7643 §3.1), not to a schema.
            if ["id", "externalId", "meta", "schemas"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(path))
            {
                continue;
            }
            // The mapping's own path grammar: extension, attribute, sub-attribute.
            let parsed = super::proto::AttrPath::parse(path);
            let schema = parsed.ext.as_deref().unwrap_or(USER_SCHEMA);
            let why = if schema != USER_SCHEMA
                && self
                    .user_extensions
                    .as_ref()
                    .is_some_and(|e| !e.contains(schema))
            {
                Some(format!("the User resource type declares no {schema}"))
            } else if let Some(declared) = schemas.get(schema) {
                let name = parsed.attr.to_lowercase();
                let has_subs = declared.iter().any(|a| a.starts_with(&format!("{name}.")));
                if !declared.contains(&name) {
                    Some(format!("not in {schema}"))
                } else if let Some(sub) = parsed.sub().map(str::to_lowercase)
                    && has_subs
                    && !declared.contains(&format!("{name}.{sub}"))
                {
                    Some(format!("{name} has no sub-attribute {sub}"))
                } else {
                    None
                }
            } else {
                Some(format!("schema {schema} is not served"))
            };
            if let Some(why) = why {
                out.push((path.to_owned(), why));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undeclared_paths_are_named_with_the_reason() {
        let core: BTreeSet<String> = [
            "username",
            "name",
            "name.givenname",
            "emails",
            "emails.value",
            "active",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let d = Discovery {
            user_extensions: Some(BTreeSet::new()),
            schemas: Some([(USER_SCHEMA.to_owned(), core)].into()),
            ..Discovery::default()
        };
        let got = d.undeclared([
            "externalId",
            "userName",
            "name.givenName",
            "name.familyName",
            "emails[type eq \"work\"].value",
            "title",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        ]);
        assert_eq!(
            got,
            [
                "name.familyName (name has no sub-attribute familyname)",
                "title (not in urn:ietf:params:scim:schemas:core:2.0:User)",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department (the User resource type declares no urn:ietf:params:scim:schemas:extension:enterprise:2.0:User)",
            ]
        );
        // No /Schemas: RFC core plus enterprise, nothing reported.
        assert!(Discovery::default().undeclared(["title"]).is_empty());
    }
}
