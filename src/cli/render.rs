//! What the commands print for a person (stdout), and the JSON of `sync-now --json`.
//! Rendering only: every value comes from a typed result ([`crate::engine::CycleRun`],
//! [`crate::status::Status`], [`crate::activation::Accepted`]).

use serde::Serialize;

use crate::activation::{Accepted, Outcome};
use crate::engine::CycleRun;
use crate::report::CycleReport;
use crate::status::Status;

/// `activate`'s answer, one line per app.
pub(super) fn accepted(accepted: &Accepted, group: &str, user: &str) {
    out!(
        "activation {}: user {user} in group {group} until {}",
        accepted.activation_id,
        accepted
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for a in &accepted.apps {
        match (a.outcome, a.latency_ms) {
            (Outcome::Pushed, Some(ms)) => {
                out!("  {}: pushed, the app confirmed in {ms} ms", a.app)
            }
            (Outcome::Pushed, None) => out!("  {}: pushed, not yet confirmed", a.app),
            (Outcome::Active, _) => out!(
                "  {}: active (already live; nothing sent, expiry extended)",
                a.app
            ),
            (other, _) => out!(
                "  {}: {other}{}",
                a.app,
                a.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// One report of `sync-now --json`; a dry run adds the operations it would send.
#[derive(Serialize)]
struct ReportJson<'a> {
    #[serde(flatten)]
    report: &'a CycleReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    operations: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    held_operations: Option<Vec<String>>,
}

/// `{"apps": [report…]}` of `sync-now --json`.
pub(super) fn reports_json(run: &CycleRun, dry_run: bool) -> String {
    #[derive(Serialize)]
    struct Reports<'a> {
        apps: Vec<ReportJson<'a>>,
    }
    let texts = |ops: &[crate::plan::Op]| ops.iter().map(ToString::to_string).collect();
    let apps = run
        .apps
        .iter()
        .map(|c| ReportJson {
            report: &c.report,
            operations: dry_run.then(|| texts(&c.plan.ops)),
            held_operations: dry_run.then(|| texts(&c.plan.held)),
        })
        .collect();
    serde_json::to_string_pretty(&Reports { apps }).unwrap_or_default()
}

/// `sync-now`'s human output: per app the plan of a dry run, the report and its failures.
pub(super) fn reports(run: &CycleRun, dry_run: bool) {
    for c in &run.apps {
        if dry_run {
            out!(
                "{}: dry run, {} operation(s) would be sent, nothing was:",
                c.report.app,
                c.plan.ops.len()
            );
            for op in &c.plan.ops {
                out!("  {op}");
            }
            for op in &c.plan.held {
                out!("  HELD (max_deprovisions): {op}");
            }
        }
        out!("{}", c.report);
        for line in &c.learnt {
            out!("  learnt: {line}");
        }
        for e in &c.report.errors {
            out!("  failed: {} {}: {}", e.op, e.object, e.error);
        }
        if c.report.held > 0 {
            out!(
                "  {} disables/deletes were held by max_deprovisions; review them with --dry-run, then raise max_deprovisions for one run if they are intended",
                c.report.held
            );
        }
    }
}

/// `status`'s human output.
pub(super) fn status(state: &str, status: &Status) {
    out!("state: {state}");
    for a in &status.apps {
        out!(
            "{}: {} users and {} groups managed{}",
            a.name,
            a.managed_users,
            a.managed_groups,
            if a.quarantined {
                " (QUARANTINED: last cycle changed nothing)"
            } else {
                ""
            }
        );
        if let Some(l) = &a.lease {
            out!(
                "  lease: pid {} on {} since {}, until {}",
                l.pid,
                l.host,
                l.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                l.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        match &a.last_cycle {
            None => out!("  no cycle yet"),
            Some(r) => {
                out!(
                    "  last cycle ({}) {} → {}",
                    r.reason,
                    r.started_at,
                    r.finished_at
                );
                out!("  {r}");
            }
        }
        if let Some(l) = &a.schema {
            let caps = l.capabilities.summary();
            out!(
                "  schema learnt {}{}",
                l.discovered_at,
                if caps.is_empty() {
                    String::new()
                } else {
                    format!(": {caps}")
                }
            );
            for note in &l.notes {
                out!("  schema: {note} (taken as RFC core + enterprise)");
            }
            for line in l.news_since(None) {
                out!("  {line}");
            }
        }
        for f in &a.failing_objects {
            out!(
                "  failing since {}: {} {} ({} attempts): {}",
                f.since,
                f.op,
                f.object,
                f.attempts,
                f.error
            );
        }
        for (list, label) in [
            (&a.active_activations, "active"),
            (&a.deferred_activations, "DEFERRED"),
        ] {
            for act in list {
                let a = &act.activation;
                out!(
                    "  {label} activation {} ({}): user {} in group {} until {} ({}{}){}",
                    a.id,
                    a.origin,
                    a.user,
                    a.group,
                    a.expires_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    act.state.as_str(),
                    act.detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default(),
                    audit(a)
                );
            }
        }
    }
}

/// The audit fields of an activation, for its status line: ` ticket ServiceNow INC-4711:
/// "why"`, each part only when given; empty when none is.
fn audit(a: &crate::store::Activation) -> String {
    let ticket = match (a.ticket_system.as_deref(), a.ticket_number.as_deref()) {
        (Some(s), Some(n)) => format!(" ticket {s} {n}"),
        (Some(s), None) => format!(" ticket system {s}"),
        (None, Some(n)) => format!(" ticket {n}"),
        (None, None) => String::new(),
    };
    let why = a
        .justification
        .as_deref()
        .map(|j| format!(" justification: {j:?}"))
        .unwrap_or_default();
    format!("{ticket}{why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_fields_join_the_activation_line_when_given() {
        let mut a = crate::store::Activation {
            id: "a1".into(),
            group: "g".into(),
            user: "u".into(),
            expires_at: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
            origin: "webhook".into(),
            justification: None,
            ticket_number: None,
            ticket_system: None,
        };
        assert_eq!(audit(&a), "");
        a.ticket_number = Some("INC-4711".into());
        assert_eq!(audit(&a), " ticket INC-4711");
        a.ticket_system = Some("ServiceNow".into());
        a.justification = Some("restore billing".into());
        assert_eq!(
            audit(&a),
            r#" ticket ServiceNow INC-4711 justification: "restore billing""#
        );
    }
}
