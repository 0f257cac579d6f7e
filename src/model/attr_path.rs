//! SCIM attribute paths as the config and the mapping name them: the grammar a path must
//! follow ([`check_scim_path`]), the paths every user must carry
//! ([`REQUIRED_USER_PATHS`]), and the default mapping table of SPEC §3 with an app's
//! `[apps.attributes]` overrides applied ([`user_mapping`], [`mapped_paths`]).
//!
//! Vocabulary only, shared by `config` (which validates the overrides), `mapping` (which
//! maps users with them) and the Graph source (which reads the source attributes they
//! name). Pure: it must not read a config, a directory or a user, nor know SCIM JSON (only
//! `scim` turns paths into resources).

use std::collections::BTreeMap;

use super::AttrKey;

/// The enterprise User extension's schema URN (RFC 7643 §4.3), the prefix of its mapping paths.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The default user mapping of SPEC §3: (SCIM attribute path, source attribute).
pub const DEFAULT_USER_MAPPING: &[(&str, &str)] = &[
    ("externalId", "id"),
    ("userName", "userPrincipalName"),
    ("active", "accountEnabled"),
    ("displayName", "displayName"),
    ("name.givenName", "givenName"),
    ("name.familyName", "surname"),
    ("emails[type eq \"work\"].value", "mail"),
    ("title", "jobTitle"),
    (
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        "employeeId",
    ),
    (
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "department",
    ),
];

/// SCIM paths every user must carry; an override cannot drop them.
pub const REQUIRED_USER_PATHS: &[&str] = &["userName", "active"];

/// Checks that a SCIM attribute path has one of the shapes the mapping supports:
/// `attr`, `attr.sub`, `attr[type eq "x"].sub`, `urn:…:Schema:attr` or `urn:…:Schema:attr.sub`.
///
/// # Errors
/// A sentence saying which shape was expected.
pub fn check_scim_path(path: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{path:?} is not a supported SCIM attribute path (attr, attr.sub, attr[type eq \"x\"].sub or urn:…:attr)"
        ))
    };
    let local = if path.starts_with("urn:") {
        match path.rsplit_once(':') {
            Some((_, attr)) => attr,
            None => return bad(),
        }
    } else {
        path
    };
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    if let Some((head, rest)) = local.split_once('[') {
        // attr[type eq "x"].sub
        let Some((filter, sub)) = rest.split_once("].") else {
            return bad();
        };
        let ok_filter = filter
            .strip_prefix("type eq \"")
            .and_then(|f| f.strip_suffix('"'))
            .is_some_and(|v| !v.is_empty() && !v.contains('"'));
        if is_name(head) && ok_filter && is_name(sub) && !path.starts_with("urn:") {
            return Ok(());
        }
        return bad();
    }
    match local.split_once('.') {
        Some((a, b)) if is_name(a) && is_name(b) => Ok(()),
        None if is_name(local) => Ok(()),
        _ => bad(),
    }
}

/// The SCIM paths an app maps, defaults merged with its overrides (dropped entries excluded).
pub fn mapped_paths(overrides: &BTreeMap<String, String>) -> Vec<String> {
    user_mapping(overrides)
        .into_iter()
        .map(|(scim, _)| scim.to_string())
        .collect()
}

/// The effective (SCIM path, source attribute) pairs of an app, in a stable order. The paths
/// are shared keys: every user mapped with them points at the same strings.
pub fn user_mapping(overrides: &BTreeMap<String, String>) -> Vec<(AttrKey, String)> {
    let mut map: BTreeMap<String, String> = DEFAULT_USER_MAPPING
        .iter()
        .map(|(s, a)| ((*s).to_owned(), (*a).to_owned()))
        .collect();
    for (scim, src) in overrides {
        map.insert(scim.clone(), src.clone());
    }
    map.into_iter()
        .filter(|(_, src)| !src.is_empty())
        .map(|(scim, src)| (AttrKey::from(scim), src))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_shapes() {
        for ok in [
            "title",
            "name.givenName",
            "emails[type eq \"work\"].value",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ] {
            assert!(check_scim_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "emails[type ne \"x\"].value", "a.b.c", "1x"] {
            assert!(check_scim_path(bad).is_err(), "{bad}");
        }
    }
}
