//! Mapping: source snapshot + one app's settings → the state that app should hold.
//!
//! Pure: no IO, no clock. It decides scope (members of assigned groups, transitively when the
//! app sets `flatten_nested`, plus live activations) and maps each in-scope user's source
//! attributes to SCIM attribute paths with the default mapping of SPEC §3 and the app's
//! `[apps.attributes]` overrides. It never talks SCIM; it only names attribute paths.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use serde_json::Value;

use crate::config::AppConfig;
use crate::model::attr_path::user_mapping;
use crate::model::{
    AttrKey, Attrs, Desired, DesiredGroup, DesiredUser, Directory, SourceAttrs, SourceId,
    SourceUser, Unmapped,
};

/// Why an app's desired state could not be computed. The cycle stops before any write.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// An assigned group is not in the source: a typo, or a group deleted while still
    /// assigned. Treated as a failed read so that its members are not deprovisioned.
    #[error(
        "assigned group {0} is not in the source; fix the app's `groups` or the source (nothing was deprovisioned)"
    )]
    MissingGroup(SourceId),
    /// One user cannot be provisioned (only for a single membership; a cycle reports such
    /// users as [`Unmapped`] instead).
    #[error("user {user} cannot be provisioned: {reason}")]
    Unmappable {
        /// The user.
        user: SourceId,
        /// Why.
        reason: String,
    },
}

/// One app's desired state plus the in-scope users that could not be mapped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppDesired {
    /// What the app should hold.
    pub desired: Desired,
    /// In-scope users left alone because their attributes cannot be mapped.
    pub unmapped: Vec<Unmapped>,
}

/// Computes what `app` should hold given the source snapshot and the live activations
/// (`(group, user)` pairs that count as memberships on top of the source).
///
/// # Errors
/// [`Error::MissingGroup`] when an assigned group is not in the snapshot.
pub fn desired_for_app(
    dir: &Directory,
    app: &AppConfig,
    activations: &[(SourceId, SourceId)],
) -> Result<AppDesired, Error> {
    let mapping = user_mapping(&app.attributes);
    let mut groups = BTreeMap::new();
    // Hashed: a tenant's memberships are tested against its users hundreds of thousands of
    // times, and ids sharing long prefixes make each ordered-map probe many comparisons.
    let is_user: FxHashSet<&SourceId> = dir.users.keys().collect();
    for gid in &app.groups {
        let group = dir
            .groups
            .get(gid)
            .ok_or_else(|| Error::MissingGroup(gid.clone()))?;
        let mut members: BTreeSet<SourceId> = if app.flatten_nested {
            transitive_users(dir, gid)
        } else {
            group
                .members
                .iter()
                .filter(|m| is_user.contains(m))
                .cloned()
                .collect()
        };
        for (g, u) in activations {
            if g == gid && is_user.contains(u) {
                members.insert(u.clone());
            }
        }
        groups.insert(
            gid.clone(),
            DesiredGroup {
                source_id: gid.clone(),
                display_name: group.display_name.clone(),
                members,
            },
        );
    }
    let in_scope: FxHashSet<&SourceId> = groups.values().flat_map(|g| &g.members).collect();

    let mut out = AppDesired::default();
    let mut users = Vec::with_capacity(in_scope.len());
    // userName is unique in the app (case-insensitively): the first source id keeps it.
    let mut user_names: FxHashMap<String, &SourceId> = FxHashMap::default();
    user_names.reserve(in_scope.len());
    // In the directory's order, so that the first of two users with one userName is always
    // the same.
    let scope: Vec<(&SourceId, &SourceUser)> = dir
        .users
        .iter()
        .filter(|(u, _)| in_scope.contains(u))
        .collect();
    let required = app.profile.required_user_paths();
    let mapped = map_all(&scope, |(uid, user)| {
        map_user(uid, &user.attrs, &mapping, required)
    });
    for ((uid, _), mapped) in scope.into_iter().zip(mapped) {
        let mapped = mapped.and_then(|attrs| {
            let key = attrs
                .get("userName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            match user_names.get(&key) {
                Some(first) => Err(format!(
                    "userName {key:?} is also the userName of source user {first}"
                )),
                None => {
                    user_names.insert(key, uid);
                    Ok(attrs)
                }
            }
        });
        match mapped {
            Ok(attrs) => users.push((
                uid.clone(),
                DesiredUser {
                    source_id: uid.clone(),
                    attrs: Arc::new(attrs),
                },
            )),
            Err(reason) => out.unmapped.push(Unmapped {
                source_id: uid.clone(),
                reason,
            }),
        }
    }
    // Built whole from the directory's order, not inserted one by one.
    out.desired.users = users.into_iter().collect();
    // A group only lists members the app will hold; unmapped users keep whatever they have.
    if !out.unmapped.is_empty() {
        let unmapped: FxHashSet<&SourceId> = out.unmapped.iter().map(|u| &u.source_id).collect();
        for g in groups.values_mut() {
            g.members.retain(|m| !unmapped.contains(m));
        }
    }
    out.desired.groups = groups;
    Ok(out)
}

/// Whether the source lists `user` as a standing member of `group` for `app` (directly, or
/// through nested groups when the app sets `flatten_nested`). Eligibility does not count.
pub fn standing_member(
    dir: &Directory,
    app: &AppConfig,
    group: &SourceId,
    user: &SourceId,
) -> bool {
    if app.flatten_nested {
        transitive_users(dir, group).contains(user)
    } else {
        dir.groups
            .get(group)
            .is_some_and(|g| g.members.contains(user))
    }
}

/// The desired state of one membership: `user` mapped, and `group` with `user` as its only
/// member. An activation push plans against this and the store's record of the same two
/// objects, so it can create the user and the group, re-enable or update the user, and add
/// the member, and never touches anything else.
///
/// # Errors
/// [`Error::MissingGroup`] when the group is not in the snapshot; [`Error::Unmappable`] when
/// the user is not in the snapshot or cannot be mapped.
pub fn desired_for_membership(
    dir: &Directory,
    app: &AppConfig,
    group: &SourceId,
    user: &SourceId,
) -> Result<Desired, Error> {
    let g = dir
        .groups
        .get(group)
        .ok_or_else(|| Error::MissingGroup(group.clone()))?;
    let u = dir.users.get(user).ok_or_else(|| Error::Unmappable {
        user: user.clone(),
        reason: "the user is not in the source".into(),
    })?;
    let mapping = user_mapping(&app.attributes);
    let required = app.profile.required_user_paths();
    let attrs =
        map_user(user, &u.attrs, &mapping, required).map_err(|reason| Error::Unmappable {
            user: user.clone(),
            reason,
        })?;
    let mut desired = Desired::default();
    desired.users.insert(
        user.clone(),
        DesiredUser {
            source_id: user.clone(),
            attrs: Arc::new(attrs),
        },
    );
    desired.groups.insert(
        group.clone(),
        DesiredGroup {
            source_id: group.clone(),
            display_name: g.display_name.clone(),
            members: BTreeSet::from([user.clone()]),
        },
    );
    Ok(desired)
}

/// Users reachable from `root` through nested groups, cycle-safe.
fn transitive_users(dir: &Directory, root: &SourceId) -> BTreeSet<SourceId> {
    let mut users = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(gid) = stack.pop() {
        if !seen.insert(gid) {
            continue;
        }
        let Some(g) = dir.groups.get(gid) else {
            continue;
        };
        for m in &g.members {
            if dir.users.contains_key(m) {
                users.insert(m.clone());
            } else if dir.groups.contains_key(m) {
                stack.push(m);
            }
        }
    }
    users
}

/// Below this many users a tenant is mapped on one thread.
const PARALLEL_FROM: usize = 10_000;

/// `f` of each of `items`, in order: on the machine's cores for a tenant's worth of users
/// (each is mapped on its own; the result does not depend on how they were shared out).
fn map_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads == 1 || items.len() < PARALLEL_FROM {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Maps one user's source attributes to SCIM attribute paths; `required` are the paths the
/// app's profile needs a value for (a user without one is not sent).
fn map_user(
    id: &SourceId,
    src: &SourceAttrs,
    mapping: &[(AttrKey, String)],
    required: &[&str],
) -> Result<Attrs, String> {
    let mut attrs = Attrs::new();
    for (scim, source_attr) in mapping {
        let value = if source_attr == "id" {
            Value::String(id.as_str().to_owned())
        } else {
            match src.get(source_attr.as_str()) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.is_empty() => continue,
                Some(v) => v.clone(),
            }
        };
        attrs.insert(scim.clone(), value);
    }
    let source_of = |path: &str| {
        mapping
            .iter()
            .find(|(s, _)| &**s == path)
            .map_or("", |(_, a)| a.as_str())
    };
    match attrs.get("userName") {
        Some(Value::String(_)) => {}
        _ => {
            return Err(format!(
                "no value for userName (source attribute {:?})",
                source_of("userName")
            ));
        }
    }
    if let Some(missing) = required.iter().find(|p| !attrs.contains_key(**p)) {
        return Err(format!(
            "no value for {missing} (source attribute {:?}), which the app's profile requires",
            source_of(missing)
        ));
    }
    let active = match attrs.get("active") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(other) => return Err(format!("active must be true or false, not {other}")),
    };
    attrs.insert("active".into(), Value::Bool(active));
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_on_several_threads_keeps_the_order() {
        let items: Vec<usize> = (0..PARALLEL_FROM * 3 + 7).collect();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let out = map_all(&items, |i| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(calls.into_inner(), items.len());
    }
    use crate::model::SourceGroup;
    use crate::model::attr_path::ENTERPRISE;
    use serde_json::json;

    fn dir() -> Directory {
        let mut d = Directory::default();
        for (id, upn, enabled) in [
            ("u1", "a@x", true),
            ("u2", "b@x", false),
            ("u3", "c@x", true),
        ] {
            let attrs = json!({"userPrincipalName": upn, "accountEnabled": enabled,
                               "displayName": id, "jobTitle": "Eng", "department": "R&D", "mail": null});
            d.users.insert(
                id.into(),
                SourceUser {
                    id: id.into(),
                    attrs: crate::model::attrs_from_json(attrs),
                },
            );
        }
        let g = |id: &str, members: &[&str], eligible: &[&str]| SourceGroup {
            id: id.into(),
            display_name: format!("Group {id}"),
            members: members.iter().map(|m| SourceId::from(*m)).collect(),
            eligible: eligible.iter().map(|m| SourceId::from(*m)).collect(),
        };
        d.groups
            .insert("g1".into(), g("g1", &["u1", "g2"], &["u3"]));
        d.groups.insert("g2".into(), g("g2", &["u2", "g1"], &[]));
        d
    }

    fn app(groups: &[&str], flatten: bool) -> AppConfig {
        let text = format!(
            "[source]\nkind=\"file\"\npath=\"d.json\"\n[[apps]]\nname=\"a\"\nbase_url=\"http://x\"\ntoken_env=\"T\"\ngroups={groups:?}\nflatten_nested={flatten}\n"
        );
        crate::config::Config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .apps
            .remove(0)
    }

    #[test]
    fn scope_is_direct_members_of_assigned_groups() {
        let d = desired_for_app(&dir(), &app(&["g1"], false), &[]).unwrap();
        assert_eq!(
            d.desired
                .users
                .keys()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            ["u1"]
        );
        let g = &d.desired.groups[&SourceId::from("g1")];
        assert_eq!(g.display_name, "Group g1");
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn flatten_nested_follows_cycles_once() {
        let d = desired_for_app(&dir(), &app(&["g1"], true), &[]).unwrap();
        assert_eq!(d.desired.users.len(), 2);
        assert_eq!(d.desired.groups[&SourceId::from("g1")].members.len(), 2);
    }

    #[test]
    fn eligible_only_with_activation() {
        let a = app(&["g1"], false);
        let d = desired_for_app(&dir(), &a, &[]).unwrap();
        assert!(!d.desired.users.contains_key(&SourceId::from("u3")));
        let act = [(SourceId::from("g1"), SourceId::from("u3"))];
        let d = desired_for_app(&dir(), &a, &act).unwrap();
        assert!(
            d.desired.groups[&SourceId::from("g1")]
                .members
                .contains(&SourceId::from("u3"))
        );
    }

    #[test]
    fn default_mapping_and_disabled_users() {
        let d = desired_for_app(&dir(), &app(&["g2"], false), &[]).unwrap();
        let u = &d.desired.users[&SourceId::from("u2")];
        assert_eq!(u.attrs["userName"], json!("b@x"));
        assert_eq!(u.attrs["externalId"], json!("u2"));
        assert_eq!(u.attrs["active"], json!(false));
        assert_eq!(u.attrs["title"], json!("Eng"));
        assert_eq!(
            u.attrs[format!("{ENTERPRISE}:department").as_str()],
            json!("R&D")
        );
        assert!(!u.attrs.contains_key("emails[type eq \"work\"].value"));
    }

    #[test]
    fn overrides_replace_and_drop_entries() {
        let mut a = app(&["g1"], false);
        a.attributes.insert("title".into(), "department".into());
        a.attributes.insert("displayName".into(), String::new());
        let d = desired_for_app(&dir(), &a, &[]).unwrap();
        let u = &d.desired.users[&SourceId::from("u1")];
        assert_eq!(u.attrs["title"], json!("R&D"));
        assert!(!u.attrs.contains_key("displayName"));
    }

    #[test]
    fn missing_group_is_an_error_not_an_empty_scope() {
        let e = desired_for_app(&dir(), &app(&["g-gone"], false), &[]).unwrap_err();
        assert_eq!(e, Error::MissingGroup("g-gone".into()));
    }

    #[test]
    fn user_without_user_name_is_unmapped_not_dropped() {
        let mut d = dir();
        d.users
            .get_mut(&SourceId::from("u1"))
            .unwrap()
            .attrs
            .remove("userPrincipalName");
        let out = desired_for_app(&d, &app(&["g1"], false), &[]).unwrap();
        assert!(out.desired.users.is_empty());
        assert_eq!(out.unmapped.len(), 1);
        assert!(out.unmapped[0].reason.contains("userName"));
    }

    #[test]
    fn duplicate_user_name_is_unmapped_for_the_second_user_only() {
        let mut d = dir();
        d.users
            .get_mut(&SourceId::from("u2"))
            .unwrap()
            .attrs
            .insert("userPrincipalName".into(), json!("A@X"));
        let out = desired_for_app(&d, &app(&["g1"], true), &[]).unwrap();
        assert_eq!(out.desired.users.len(), 1);
        assert!(out.desired.users.contains_key(&SourceId::from("u1")));
        assert_eq!(out.unmapped[0].source_id, SourceId::from("u2"));
        assert!(out.unmapped[0].reason.contains("u1"), "{:?}", out.unmapped);
    }
}
