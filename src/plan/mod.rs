//! Plan: the pure diff of desired × observed state into ordered SCIM operations.
//!
//! No IO, no await, no clock, no failure: given the same inputs it returns the same [`Plan`] in
//! the same order, which makes it the cheapest place to test behaviour. Operations name objects
//! by source id; `apply` resolves SCIM ids as earlier phases create them.
//!
//! Invariants kept here:
//! - only objects in `observed` (created or adopted by us) are ever updated, disabled or deleted;
//! - a group is deleted only when we created it; an adopted group that is no longer assigned is
//!   forgotten, never deleted;
//! - member changes are batched at most [`MEMBER_BATCH`] per PATCH;
//! - unchanged attributes are never re-sent, so an unchanged source plans nothing;
//! - when a cycle's disables and deletes exceed `max_deprovisions`, none of them is planned:
//!   they are all `held` (sending "the first 50" would still be the accident the guard exists
//!   to stop).

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::model::{Attrs, Deprovision, Desired, Observed, ScimId, SourceId, Unmapped};

/// Most members added or removed by one PATCH (AWS IAM Identity Center's limit, and a sane
/// request size everywhere else).
pub const MEMBER_BATCH: usize = 100;

/// The app settings the plan depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Disable or delete users leaving scope.
    pub deprovision: Deprovision,
    /// Most disables and deletes in one cycle before they are all held.
    pub max_deprovisions: u32,
}

/// One operation against one app.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Look the user up by the app's `matching` attribute; adopt it when found (patching any
    /// attribute that differs), create it otherwise.
    CreateUser {
        /// The user.
        source_id: SourceId,
        /// Everything to provision.
        attrs: Arc<Attrs>,
    },
    /// PATCH the attributes that changed since the app last confirmed them.
    UpdateUser {
        /// The user.
        source_id: SourceId,
        /// The app's id.
        scim_id: ScimId,
        /// The full desired attributes (a multi-valued attribute is rebuilt from them).
        attrs: Arc<Attrs>,
        /// Paths whose value differs from what the app holds.
        changed: Vec<String>,
        /// What the change means for the account.
        effect: UserEffect,
    },
    /// The user left scope: `PATCH active=false` or `DELETE`, per the app's `deprovision`.
    DeprovisionUser {
        /// The user.
        source_id: SourceId,
        /// The app's id.
        scim_id: ScimId,
        /// How.
        how: Deprovision,
        /// The attributes last confirmed (kept, with `active=false`, after a disable).
        attrs: Arc<Attrs>,
    },
    /// Look the group up by `displayName`; adopt it or create it (without members).
    CreateGroup {
        /// The group.
        source_id: SourceId,
        /// Its display name.
        display_name: String,
    },
    /// PATCH `displayName`.
    RenameGroup {
        /// The group.
        source_id: SourceId,
        /// The app's id.
        scim_id: ScimId,
        /// The new name.
        display_name: String,
    },
    /// PATCH add members (at most [`MEMBER_BATCH`]).
    AddMembers {
        /// The group.
        group: SourceId,
        /// Users to add.
        members: Vec<SourceId>,
    },
    /// PATCH remove members (at most [`MEMBER_BATCH`]).
    RemoveMembers {
        /// The group.
        group: SourceId,
        /// Users to remove.
        members: Vec<SourceId>,
    },
    /// PATCH remove members scim-sync does not manage, found in a managed group by a
    /// read-back of the app (drift; at most [`MEMBER_BATCH`]). The users are not touched.
    RemoveForeignMembers {
        /// The group.
        group: SourceId,
        /// The app's ids of the members to remove.
        members: Vec<ScimId>,
    },
    /// DELETE a group we created that is no longer assigned.
    DeleteGroup {
        /// The group.
        source_id: SourceId,
        /// The app's id.
        scim_id: ScimId,
    },
    /// Stop managing an adopted group that is no longer assigned (no request is sent).
    ForgetGroup {
        /// The group.
        source_id: SourceId,
    },
}

/// What an attribute update does to the account, for reports and the deprovision guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserEffect {
    /// Attribute changes only.
    Update,
    /// `active` goes from true to false (the source disabled the account).
    Disable,
    /// `active` goes from false to true (re-enabled, or back in scope after a disable).
    Enable,
}

impl UserEffect {
    /// The verb for reports and dry-run lines.
    pub fn verb(self) -> &'static str {
        match self {
            UserEffect::Update => "update",
            UserEffect::Disable => "disable",
            UserEffect::Enable => "enable",
        }
    }
}

/// The phases of apply, in the order they run. Users exist before groups reference them,
/// adds come before removes, and deprovisions come last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Create, adopt and update users.
    Users,
    /// Create, adopt and rename groups.
    Groups,
    /// Add members.
    AddMembers,
    /// Remove members.
    RemoveMembers,
    /// Disable or delete users, delete or forget groups.
    Deprovision,
}

impl Op {
    /// The phase this operation runs in.
    pub fn phase(&self) -> Phase {
        match self {
            Op::CreateUser { .. } => Phase::Users,
            Op::UpdateUser { effect, .. } => match effect {
                UserEffect::Disable => Phase::Deprovision,
                UserEffect::Update | UserEffect::Enable => Phase::Users,
            },
            Op::CreateGroup { .. } | Op::RenameGroup { .. } => Phase::Groups,
            Op::AddMembers { .. } => Phase::AddMembers,
            Op::RemoveMembers { .. } | Op::RemoveForeignMembers { .. } => Phase::RemoveMembers,
            Op::DeprovisionUser { .. } | Op::DeleteGroup { .. } | Op::ForgetGroup { .. } => {
                Phase::Deprovision
            }
        }
    }

    /// Whether the accidental-deletion guard counts this operation.
    pub fn is_deprovision(&self) -> bool {
        matches!(
            self,
            Op::DeprovisionUser { .. }
                | Op::DeleteGroup { .. }
                | Op::UpdateUser {
                    effect: UserEffect::Disable,
                    ..
                }
        )
    }

    /// Whether the operation sends a write to the app.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::ForgetGroup { .. })
    }
}

/// The ordered operations for one app, and those held back by the guard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Operations to apply, sorted by phase, then by source id.
    pub ops: Vec<Op>,
    /// Deprovisions not sent because there were more than `max_deprovisions`.
    pub held: Vec<Op>,
}

impl Plan {
    /// True when there is nothing to do (held operations aside).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Diffs `desired` against `observed`.
///
/// Users in `unmapped` are in scope but cannot be provisioned: they are neither created nor
/// deprovisioned, and their group memberships are left as they are.
pub fn plan(desired: &Desired, observed: &Observed, unmapped: &[Unmapped], policy: Policy) -> Plan {
    let keep: BTreeSet<&SourceId> = unmapped.iter().map(|u| &u.source_id).collect();
    let mut ops = Vec::new();

    for (id, want) in &desired.users {
        match observed.users.get(id) {
            None => ops.push(Op::CreateUser {
                source_id: id.clone(),
                attrs: want.attrs.clone(),
            }),
            Some(have) => {
                // Shared: the store found the app holding exactly what is wanted.
                if Arc::ptr_eq(&want.attrs, &have.attrs) {
                    continue;
                }
                let changed = changed_paths(&want.attrs, &have.attrs);
                if changed.is_empty() {
                    continue;
                }
                let was = have.is_active();
                let will = want
                    .attrs
                    .get("active")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let effect = match (was, will) {
                    (true, false) => UserEffect::Disable,
                    (false, true) => UserEffect::Enable,
                    _ => UserEffect::Update,
                };
                ops.push(Op::UpdateUser {
                    source_id: id.clone(),
                    scim_id: have.scim_id.clone(),
                    attrs: want.attrs.clone(),
                    changed,
                    effect,
                });
            }
        }
    }
    for (id, have) in &observed.users {
        if desired.users.contains_key(id) || keep.contains(id) {
            continue;
        }
        match policy.deprovision {
            // Already disabled: nothing left to do until the user returns.
            Deprovision::Disable if !have.is_active() => {}
            how => ops.push(Op::DeprovisionUser {
                source_id: id.clone(),
                scim_id: have.scim_id.clone(),
                how,
                attrs: have.attrs.clone(),
            }),
        }
    }

    for (id, want) in &desired.groups {
        let have_members = match observed.groups.get(id) {
            None => {
                ops.push(Op::CreateGroup {
                    source_id: id.clone(),
                    display_name: want.display_name.clone(),
                });
                None
            }
            Some(have) => {
                if have.display_name != want.display_name {
                    ops.push(Op::RenameGroup {
                        source_id: id.clone(),
                        scim_id: have.scim_id.clone(),
                        display_name: want.display_name.clone(),
                    });
                }
                Some(&have.members)
            }
        };
        let empty = BTreeSet::new();
        let have_members = have_members.unwrap_or(&empty);
        let add: Vec<SourceId> = want.members.difference(have_members).cloned().collect();
        let remove: Vec<SourceId> = have_members
            .difference(&want.members)
            .filter(|m| !keep.contains(m))
            .cloned()
            .collect();
        for chunk in add.chunks(MEMBER_BATCH) {
            ops.push(Op::AddMembers {
                group: id.clone(),
                members: chunk.to_vec(),
            });
        }
        for chunk in remove.chunks(MEMBER_BATCH) {
            ops.push(Op::RemoveMembers {
                group: id.clone(),
                members: chunk.to_vec(),
            });
        }
        if observed.groups.contains_key(id)
            && let Some(foreign) = observed.foreign.get(id)
        {
            let foreign: Vec<ScimId> = foreign.iter().cloned().collect();
            for chunk in foreign.chunks(MEMBER_BATCH) {
                ops.push(Op::RemoveForeignMembers {
                    group: id.clone(),
                    members: chunk.to_vec(),
                });
            }
        }
    }
    for (id, have) in &observed.groups {
        if desired.groups.contains_key(id) {
            continue;
        }
        ops.push(match have.origin {
            crate::model::Origin::Created => Op::DeleteGroup {
                source_id: id.clone(),
                scim_id: have.scim_id.clone(),
            },
            crate::model::Origin::Adopted => Op::ForgetGroup {
                source_id: id.clone(),
            },
        });
    }

    // Stable sort: within a phase, the order above (by source id) is kept.
    ops.sort_by_key(Op::phase);
    let deprovisions = ops.iter().filter(|o| o.is_deprovision()).count();
    let mut held = Vec::new();
    if deprovisions > policy.max_deprovisions as usize {
        let (h, rest): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(Op::is_deprovision);
        held = h;
        ops = rest;
    }
    Plan { ops, held }
}

/// Paths whose desired value differs from the confirmed one (including paths to remove).
/// `userName` compares case-insensitively, as RFC 7643 defines it (`caseExact: false`).
pub fn changed_paths(want: &Attrs, have: &Attrs) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in want {
        let same = match (have.get(k), &**k) {
            (Some(Value::String(a)), "userName") => {
                v.as_str().is_some_and(|b| a.eq_ignore_ascii_case(b))
            }
            (Some(h), _) => h == v,
            (None, _) => false,
        };
        if !same {
            out.push(k.to_string());
        }
    }
    for k in have.keys() {
        if !want.contains_key(k) {
            out.push(k.to_string());
        }
    }
    out.sort();
    out
}

impl fmt::Display for Op {
    /// One line per operation, as `--dry-run` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |a: &Attrs| {
            a.get("userName")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        match self {
            Op::CreateUser { source_id, attrs } => write!(
                f,
                "create user {} ({source_id}): look up, then POST /Users",
                name(attrs)
            ),
            Op::UpdateUser {
                source_id,
                scim_id,
                attrs,
                changed,
                effect,
            } => {
                write!(
                    f,
                    "{} user {} ({source_id}): PATCH /Users/{scim_id} {}",
                    effect.verb(),
                    name(attrs),
                    changed.join(", ")
                )
            }
            Op::DeprovisionUser {
                source_id,
                scim_id,
                how,
                attrs,
            } => match how {
                Deprovision::Disable => write!(
                    f,
                    "disable user {} ({source_id}), out of scope: PATCH /Users/{scim_id} active=false",
                    name(attrs)
                ),
                Deprovision::Delete => write!(
                    f,
                    "delete user {} ({source_id}), out of scope: DELETE /Users/{scim_id}",
                    name(attrs)
                ),
            },
            Op::CreateGroup {
                source_id,
                display_name,
            } => write!(
                f,
                "create group {display_name:?} ({source_id}): look up, then POST /Groups"
            ),
            Op::RenameGroup {
                source_id,
                scim_id,
                display_name,
            } => write!(
                f,
                "rename group {source_id} to {display_name:?}: PATCH /Groups/{scim_id}"
            ),
            Op::AddMembers { group, members } => write!(
                f,
                "add {} member(s) to group {group}: {}",
                members.len(),
                list(members)
            ),
            Op::RemoveMembers { group, members } => write!(
                f,
                "remove {} member(s) from group {group}: {}",
                members.len(),
                list(members)
            ),
            Op::RemoveForeignMembers { group, members } => write!(
                f,
                "remove {} member(s) scim-sync does not manage from group {group} (added in the app): {}",
                members.len(),
                list(members)
            ),
            Op::DeleteGroup { source_id, scim_id } => write!(
                f,
                "delete group {source_id}, no longer assigned: DELETE /Groups/{scim_id}"
            ),
            Op::ForgetGroup { source_id } => write!(
                f,
                "forget group {source_id}, no longer assigned (adopted, so not deleted; no request)"
            ),
        }
    }
}

fn list<T: std::fmt::Display>(ids: &[T]) -> String {
    const SHOWN: usize = 5;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", ids.len() - SHOWN));
    }
    s
}
