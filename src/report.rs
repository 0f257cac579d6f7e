//! Cycle reports (SPEC §5): what one cycle of one app did, as JSON for `--json`, `status` and
//! the store, and as one human line for the terminal.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a cycle ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The service's start-up cycle.
    Startup,
    /// The fixed-interval scheduler.
    Schedule,
    /// `scim-sync sync-now` (or `POST /v1/sync`).
    SyncNow,
    /// An activation push.
    Activation,
}

/// How a cycle ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Everything planned was applied.
    Ok,
    /// Some operations failed; the rest were applied. Failures are retried next cycle.
    Partial,
    /// Nothing could be applied (source unreadable, app unreachable, token rejected, …).
    Failed,
    /// Deprovisions were held by `max_deprovisions`; everything else was applied.
    Held,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Held => "held",
        })
    }
}

/// One failed operation, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    /// e.g. `user u-alice (alice@contoso.example)`.
    pub object: String,
    /// e.g. `create`.
    pub op: String,
    /// The error with the app's SCIM `detail`.
    pub error: String,
}

/// The report of one cycle of one app. Field names are the contract of SPEC §5.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleReport {
    /// The app.
    pub app: String,
    /// Why the cycle ran.
    pub reason: Reason,
    /// How it ended.
    pub outcome: Outcome,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// True when nothing was sent (`--dry-run`): the counts are what would have been done.
    pub dry_run: bool,
    /// Users created with a POST.
    pub users_created: u64,
    /// Users whose attributes were patched (including re-enabled ones).
    pub users_updated: u64,
    /// Users disabled (left scope, or disabled in the source).
    pub users_disabled: u64,
    /// Users deleted.
    pub users_deleted: u64,
    /// Groups created with a POST.
    pub groups_created: u64,
    /// Groups renamed.
    pub groups_updated: u64,
    /// Groups deleted.
    pub groups_deleted: u64,
    /// Memberships added.
    pub members_added: u64,
    /// Memberships removed.
    pub members_removed: u64,
    /// Deferred activations this cycle applied.
    pub deferred_applied: u64,
    /// Differences a verifying cycle found between the app and what scim-sync last confirmed
    /// (a managed user edited or gone, a group gone, a membership added or removed, a
    /// member scim-sync does not manage), each repaired by the plan (`--verify`).
    #[serde(default)]
    pub drift_repaired: u64,
    /// Failed operations (each listed in `errors`).
    pub failed: u64,
    /// Deprovisions held back by `max_deprovisions`.
    pub held: u64,
    /// Every SCIM HTTP request the cycle sent (lookups and retries included).
    pub requests: u64,
    /// Pre-existing users found by `matching` and taken over instead of created.
    #[serde(default)]
    pub users_adopted: u64,
    /// Pre-existing groups found by `displayName` and taken over.
    #[serde(default)]
    pub groups_adopted: u64,
    /// A cycle-level error (source unreadable, app unreachable), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failed operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ObjectError>,
}

impl CycleReport {
    /// An empty report for `app`, started at `started_at`.
    pub fn new(app: &str, reason: Reason, started_at: String, dry_run: bool) -> Self {
        CycleReport {
            app: app.to_owned(),
            reason,
            outcome: Outcome::Ok,
            finished_at: started_at.clone(),
            started_at,
            dry_run,
            users_created: 0,
            users_updated: 0,
            users_disabled: 0,
            users_deleted: 0,
            groups_created: 0,
            groups_updated: 0,
            groups_deleted: 0,
            members_added: 0,
            members_removed: 0,
            deferred_applied: 0,
            drift_repaired: 0,
            failed: 0,
            held: 0,
            requests: 0,
            users_adopted: 0,
            groups_adopted: 0,
            error: None,
            errors: Vec::new(),
        }
    }

    /// Total changes made (or planned, for a dry run).
    pub fn changes(&self) -> u64 {
        self.users_created
            + self.users_updated
            + self.users_disabled
            + self.users_deleted
            + self.users_adopted
            + self.groups_created
            + self.groups_updated
            + self.groups_deleted
            + self.groups_adopted
            + self.members_added
            + self.members_removed
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Startup => "startup",
            Reason::Schedule => "schedule",
            Reason::SyncNow => "sync-now",
            Reason::Activation => "activation",
        })
    }
}

impl fmt::Display for CycleReport {
    /// One summary line naming only what happened, e.g.
    /// `crm: ok · 30 users created · 4 groups created · 52 members added · 84 requests`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = [
            (self.users_created, "users created"),
            (self.users_adopted, "users adopted"),
            (self.users_updated, "users updated"),
            (self.users_disabled, "users disabled"),
            (self.users_deleted, "users deleted"),
            (self.groups_created, "groups created"),
            (self.groups_adopted, "groups adopted"),
            (self.groups_updated, "groups renamed"),
            (self.groups_deleted, "groups deleted"),
            (self.members_added, "members added"),
            (self.members_removed, "members removed"),
            (self.deferred_applied, "deferred activations applied"),
            (self.drift_repaired, "drift repaired"),
            (self.failed, "failed"),
            (self.held, "held by max_deprovisions"),
        ];
        write!(f, "{}: {}", self.app, self.outcome)?;
        if self.dry_run {
            f.write_str(" (dry run: would be)")?;
        }
        let mut any = false;
        for (n, what) in counts {
            if n > 0 {
                write!(f, " · {n} {what}")?;
                any = true;
            }
        }
        if !any {
            f.write_str(" · no changes")?;
        }
        if self.dry_run && self.requests > 0 {
            // A dry run may read (discovery, a verification), and writes nothing.
            write!(f, " · {} reads, no write", self.requests)?;
        } else if self.dry_run {
            f.write_str(" · nothing sent")?;
        } else {
            write!(f, " · {} requests", self.requests)?;
        }
        if let Some(e) = &self.error {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_spec_fields() {
        let r = CycleReport::new("crm", Reason::SyncNow, "2026-11-23T00:00:00Z".into(), false);
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "app",
            "reason",
            "outcome",
            "started_at",
            "finished_at",
            "dry_run",
            "users_created",
            "users_updated",
            "users_disabled",
            "users_deleted",
            "groups_created",
            "groups_updated",
            "groups_deleted",
            "members_added",
            "members_removed",
            "deferred_applied",
            "failed",
            "held",
            "requests",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["reason"], "sync-now");
        assert_eq!(v["outcome"], "ok");
        let back: CycleReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.to_string(), "crm: ok · no changes · 0 requests");
        let mut r = r;
        r.users_created = 3;
        r.failed = 1;
        r.requests = 9;
        assert_eq!(
            r.to_string(),
            "crm: ok · 3 users created · 1 failed · 9 requests"
        );
    }
}
