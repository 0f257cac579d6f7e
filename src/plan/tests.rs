//! Data-driven plan tests: each case is desired and observed state written compactly, and the
//! plan it must yield, as `--dry-run` prints it.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::model::{DesiredGroup, DesiredUser, ObservedGroup, ObservedUser, Origin};

/// `user("u1", "a@x", true)` with title "Eng".
fn attrs(user_name: &str, active: bool, title: &str) -> Attrs {
    let mut a = Attrs::new();
    a.insert("userName".into(), json!(user_name));
    a.insert("active".into(), json!(active));
    if !title.is_empty() {
        a.insert("title".into(), json!(title));
    }
    a
}

struct World {
    desired: Desired,
    observed: Observed,
    unmapped: Vec<Unmapped>,
    policy: Policy,
}

impl World {
    fn new() -> Self {
        World {
            desired: Desired::default(),
            observed: Observed::default(),
            unmapped: vec![],
            policy: Policy {
                deprovision: Deprovision::Disable,
                max_deprovisions: 50,
            },
        }
    }
    fn want_user(mut self, id: &str, name: &str, active: bool, title: &str) -> Self {
        self.desired.users.insert(
            id.into(),
            DesiredUser {
                source_id: id.into(),
                attrs: attrs(name, active, title).into(),
            },
        );
        self
    }
    fn have_user(mut self, id: &str, name: &str, active: bool, title: &str) -> Self {
        self.observed.users.insert(
            id.into(),
            ObservedUser {
                scim_id: ScimId::new(format!("s-{id}")),
                origin: Origin::Created,
                attrs: attrs(name, active, title).into(),
            },
        );
        self
    }
    fn want_group(mut self, id: &str, name: &str, members: &[&str]) -> Self {
        self.desired.groups.insert(
            id.into(),
            DesiredGroup {
                source_id: id.into(),
                display_name: name.into(),
                members: members.iter().map(|m| SourceId::from(*m)).collect(),
            },
        );
        self
    }
    fn have_group(mut self, id: &str, name: &str, origin: Origin, members: &[&str]) -> Self {
        self.observed.groups.insert(
            id.into(),
            ObservedGroup {
                scim_id: ScimId::new(format!("s-{id}")),
                origin,
                display_name: name.into(),
                members: members.iter().map(|m| SourceId::from(*m)).collect(),
            },
        );
        self
    }
    fn policy(mut self, deprovision: Deprovision, max: u32) -> Self {
        self.policy = Policy {
            deprovision,
            max_deprovisions: max,
        };
        self
    }
    fn unmapped(mut self, id: &str) -> Self {
        self.unmapped.push(Unmapped {
            source_id: id.into(),
            reason: "no userName".into(),
        });
        self
    }
    fn plan(&self) -> Plan {
        plan(&self.desired, &self.observed, &self.unmapped, self.policy)
    }
    /// Asserts the plan's operations and held operations, one Display line each.
    fn check(&self, ops: &[&str], held: &[&str]) {
        let p = self.plan();
        let got: Vec<String> = p.ops.iter().map(ToString::to_string).collect();
        let got_held: Vec<String> = p.held.iter().map(ToString::to_string).collect();
        assert_eq!(got, ops, "ops");
        assert_eq!(got_held, held, "held");
        // Pure: the same inputs give the same plan.
        assert_eq!(self.plan(), p);
    }
}

#[test]
fn initial_sync_creates_users_then_groups_then_members() {
    World::new()
        .want_user("u2", "b@x", true, "")
        .want_user("u1", "a@x", true, "Eng")
        .want_group("g1", "Team", &["u1", "u2"])
        .check(
            &[
                "create user a@x (u1): look up, then POST /Users",
                "create user b@x (u2): look up, then POST /Users",
                "create group \"Team\" (g1): look up, then POST /Groups",
                "add 2 member(s) to group g1: u1, u2",
            ],
            &[],
        );
}

#[test]
fn nothing_changed_plans_nothing() {
    let w = World::new()
        .want_user("u1", "a@x", true, "Eng")
        .have_user("u1", "a@x", true, "Eng")
        .want_group("g1", "Team", &["u1"])
        .have_group("g1", "Team", Origin::Created, &["u1"]);
    assert!(w.plan().is_empty());
    w.check(&[], &[]);
}

#[test]
fn only_changed_attributes_are_sent() {
    World::new()
        .want_user("u1", "a@x", true, "Lead")
        .have_user("u1", "a@x", true, "Eng")
        .check(&["update user a@x (u1): PATCH /Users/s-u1 title"], &[]);
}

#[test]
fn user_name_case_is_not_a_change() {
    World::new()
        .want_user("u1", "Alice@X", true, "")
        .have_user("u1", "alice@x", true, "")
        .check(&[], &[]);
}

#[test]
fn rename_user_name_is_a_patch() {
    World::new()
        .want_user("u1", "alice.smith@x", true, "")
        .have_user("u1", "alice@x", true, "")
        .check(
            &["update user alice.smith@x (u1): PATCH /Users/s-u1 userName"],
            &[],
        );
}

#[test]
fn cleared_attribute_is_removed() {
    World::new()
        .want_user("u1", "a@x", true, "")
        .have_user("u1", "a@x", true, "Eng")
        .check(&["update user a@x (u1): PATCH /Users/s-u1 title"], &[]);
}

#[test]
fn source_disable_is_a_deprovision_phase_update() {
    World::new()
        .want_user("u1", "a@x", false, "")
        .have_user("u1", "a@x", true, "")
        .want_user("u2", "b@x", true, "X")
        .have_user("u2", "b@x", true, "")
        .check(
            &[
                "update user b@x (u2): PATCH /Users/s-u2 title",
                "disable user a@x (u1): PATCH /Users/s-u1 active",
            ],
            &[],
        );
}

#[test]
fn user_leaving_scope_is_disabled_once() {
    let w = World::new().have_user("u1", "a@x", true, "");
    w.check(
        &["disable user a@x (u1), out of scope: PATCH /Users/s-u1 active=false"],
        &[],
    );
    // Next cycle the store remembers it disabled: nothing more is sent.
    World::new()
        .have_user("u1", "a@x", false, "")
        .check(&[], &[]);
}

#[test]
fn user_returning_is_enabled() {
    World::new()
        .want_user("u1", "a@x", true, "")
        .have_user("u1", "a@x", false, "")
        .check(&["enable user a@x (u1): PATCH /Users/s-u1 active"], &[]);
}

#[test]
fn delete_mode_deletes() {
    World::new()
        .have_user("u1", "a@x", true, "")
        .have_user("u2", "b@x", false, "")
        .policy(Deprovision::Delete, 50)
        .check(
            &[
                "delete user a@x (u1), out of scope: DELETE /Users/s-u1",
                "delete user b@x (u2), out of scope: DELETE /Users/s-u2",
            ],
            &[],
        );
}

#[test]
fn member_changes_and_rename() {
    World::new()
        .want_user("u1", "a@x", true, "")
        .have_user("u1", "a@x", true, "")
        .want_user("u3", "c@x", true, "")
        .have_user("u3", "c@x", true, "")
        .want_group("g1", "Team Blue", &["u1", "u3"])
        .have_group("g1", "Team", Origin::Created, &["u1", "u2"])
        .check(
            &[
                "rename group g1 to \"Team Blue\": PATCH /Groups/s-g1",
                "add 1 member(s) to group g1: u3",
                "remove 1 member(s) from group g1: u2",
            ],
            &[],
        );
}

#[test]
fn members_are_batched_by_100() {
    let ids: Vec<String> = (0..250).map(|i| format!("u{i:03}")).collect();
    let mut w = World::new();
    for id in &ids {
        w = w.want_user(id, &format!("{id}@x"), true, "").have_user(
            id,
            &format!("{id}@x"),
            true,
            "",
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let p = w
        .want_group("g1", "Big", &refs)
        .have_group("g1", "Big", Origin::Created, &[])
        .plan();
    let sizes: Vec<usize> = p
        .ops
        .iter()
        .map(|o| match o {
            Op::AddMembers { members, .. } => members.len(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    let all: BTreeSet<&SourceId> = p
        .ops
        .iter()
        .flat_map(|o| match o {
            Op::AddMembers { members, .. } => members.iter(),
            _ => [].iter(),
        })
        .collect();
    assert_eq!(all.len(), 250);
}

#[test]
fn unassigned_group_deleted_only_if_created() {
    World::new()
        .have_group("g1", "Ours", Origin::Created, &[])
        .have_group("g2", "Theirs", Origin::Adopted, &[])
        .check(
            &[
                "delete group g1, no longer assigned: DELETE /Groups/s-g1",
                "forget group g2, no longer assigned (adopted, so not deleted; no request)",
            ],
            &[],
        );
}

#[test]
fn too_many_deprovisions_are_all_held() {
    let w = World::new()
        .have_user("u1", "a@x", true, "")
        .have_user("u2", "b@x", true, "")
        .have_user("u3", "c@x", true, "")
        .want_user("u4", "d@x", true, "")
        .policy(Deprovision::Disable, 2);
    w.check(
        &["create user d@x (u4): look up, then POST /Users"],
        &[
            "disable user a@x (u1), out of scope: PATCH /Users/s-u1 active=false",
            "disable user b@x (u2), out of scope: PATCH /Users/s-u2 active=false",
            "disable user c@x (u3), out of scope: PATCH /Users/s-u3 active=false",
        ],
    );
    // At the limit, they go through.
    let w = w.policy(Deprovision::Disable, 3);
    assert_eq!(w.plan().held.len(), 0);
    assert_eq!(w.plan().ops.len(), 4);
}

#[test]
fn unmapped_users_are_left_alone() {
    World::new()
        .have_user("u1", "a@x", true, "")
        .have_group("g1", "Team", Origin::Created, &["u1"])
        .want_group("g1", "Team", &[])
        .unmapped("u1")
        .check(&[], &[]);
}

#[test]
fn phases_order_deprovisions_last() {
    let p = World::new()
        .have_user("u0", "z@x", true, "")
        .want_user("u1", "a@x", true, "")
        .want_group("g1", "Team", &["u1"])
        .have_group("g9", "Old", Origin::Created, &["u0"])
        .plan();
    let phases: Vec<Phase> = p.ops.iter().map(Op::phase).collect();
    let mut sorted = phases.clone();
    sorted.sort();
    assert_eq!(phases, sorted);
    assert_eq!(phases.last(), Some(&Phase::Deprovision));
}

#[test]
fn members_scim_sync_does_not_manage_leave_a_managed_group_only() {
    let mut w = World::new()
        .want_user("u1", "a@x", true, "Eng")
        .have_user("u1", "a@x", true, "Eng")
        .want_group("g1", "Team", &["u1"])
        .have_group("g1", "Team", Origin::Created, &["u1"])
        .have_group("g2", "Old", Origin::Adopted, &[]);
    for (g, ids) in [("g1", ["x-1", "x-2"]), ("g2", ["x-3", "x-4"])] {
        w.observed.foreign.insert(
            g.into(),
            ids.iter().map(|i| ScimId::new(*i)).collect::<BTreeSet<_>>(),
        );
    }
    // g2 is no longer assigned: forgotten, its members none of our business.
    w.check(
        &[
            "remove 2 member(s) scim-sync does not manage from group g1 (added in the app): x-1, x-2",
            "forget group g2, no longer assigned (adopted, so not deleted; no request)",
        ],
        &[],
    );
}
