//! PIM for Groups' policy and requests, as Graph serves them (graph-pim-facts §1–2):
//!
//! - the member role's policy of a group: `GET /v1.0/policies/roleManagementPolicyAssignments
//!   ?$filter=scopeId eq '{group}' and scopeType eq 'Group' and roleDefinitionId eq 'member'
//!   &$expand=policy($expand=rules)`, read from the end-user activation rules:
//!   `Expiration_EndUser_Assignment` (`maximumDuration`, ISO 8601, when
//!   `isExpirationRequired`), `Enablement_EndUser_Assignment` (`enabledRules`:
//!   `Justification`, `Ticketing`, `MultiFactorAuthentication`) and
//!   `Approval_EndUser_Assignment` (`setting.isApprovalRequired`). No assignment (a group
//!   PIM does not govern) is no policy. Policy ids change when PIM onboards a group, so the
//!   policy is found by its scope every time, never by a kept id;
//! - the request an activated instance came from: `GET …/group/assignmentScheduleRequests
//!   ?$filter=groupId eq '{group}' and principalId eq '{user}'`, the one whose
//!   `targetScheduleId` is the instance's `assignmentScheduleId` (its justification and
//!   `ticketInfo`).

use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use serde_json::Value;

use super::{Error, GraphSource, QUERY, http};
use crate::model::SourceId;
use crate::source::pim::{PimInstance, PimPolicy, PimRequest};

fn quoted(id: &SourceId) -> String {
    id.as_str().replace('\'', "''")
}

impl GraphSource {
    /// The member role's activation policy of `group` (see the module); `None` when PIM
    /// does not govern the group.
    ///
    /// # Errors
    /// [`Error`] when Graph cannot be read or answers an unexpected shape.
    pub async fn read_policy(&self, group: &SourceId) -> Result<Option<PimPolicy>, Error> {
        let filter = format!(
            "scopeId eq '{}' and scopeType eq 'Group' and roleDefinitionId eq 'member'",
            quoted(group)
        );
        let url = format!(
            "{}/v1.0/policies/roleManagementPolicyAssignments?$filter={}&$expand={}",
            self.graph_url,
            utf8_percent_encode(&filter, QUERY),
            utf8_percent_encode("policy($expand=rules)", QUERY)
        );
        let what = format!("PIM policy of group {group}");
        let rows = self.http.get_all(url.clone(), &what).await?;
        let Some(rules) = rows
            .iter()
            .find(|a| {
                a["roleDefinitionId"]
                    .as_str()
                    .is_none_or(|r| r.eq_ignore_ascii_case("member"))
            })
            .map(|a| a["policy"]["rules"].as_array().cloned().unwrap_or_default())
        else {
            return Ok(None);
        };
        policy_of(&rules)
            .map(Some)
            .map_err(|message| Error::Answer {
                what,
                path: http::url_path(&url),
                message,
            })
    }

    /// The request `instance` was made from, matched by its schedule (see the module).
    ///
    /// # Errors
    /// [`Error`] when Graph cannot be read.
    pub async fn read_request(&self, instance: &PimInstance) -> Result<Option<PimRequest>, Error> {
        let Some(schedule) = &instance.schedule else {
            return Ok(None);
        };
        let filter = format!(
            "groupId eq '{}' and principalId eq '{}'",
            quoted(&instance.group),
            quoted(&instance.user)
        );
        let url = format!(
            "{}/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests?$filter={}",
            self.graph_url,
            utf8_percent_encode(&filter, QUERY)
        );
        let what = format!(
            "PIM requests of user {} for group {}",
            instance.user, instance.group
        );
        let rows = self.http.get_all(url, &what).await?;
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(rows
            .iter()
            .find(|r| r["targetScheduleId"].as_str() == Some(schedule.as_str()))
            .map(|r| PimRequest {
                status: r["status"].as_str().unwrap_or_default().to_owned(),
                justification: text(&r["justification"]),
                ticket_number: text(&r["ticketInfo"]["ticketNumber"]),
                ticket_system: text(&r["ticketInfo"]["ticketSystem"]),
            }))
    }
}

/// The activation policy that `rules` (a policy's `rules`) state.
fn policy_of(rules: &[Value]) -> Result<PimPolicy, String> {
    let rule = |id: &str| rules.iter().find(|r| r["id"].as_str() == Some(id));
    let mut policy = PimPolicy::default();
    if let Some(r) = rule("Expiration_EndUser_Assignment")
        && r["isExpirationRequired"].as_bool() != Some(false)
        && let Some(d) = r["maximumDuration"].as_str()
    {
        policy.max_duration = Some(
            iso_duration(d)
                .ok_or_else(|| format!("maximumDuration {d:?} is not an ISO 8601 duration"))?,
        );
    }
    if let Some(r) = rule("Enablement_EndUser_Assignment") {
        for on in r["enabledRules"].as_array().into_iter().flatten() {
            match on.as_str().unwrap_or_default() {
                s if s.eq_ignore_ascii_case("Justification") => policy.justification = true,
                s if s.eq_ignore_ascii_case("Ticketing") => policy.ticket = true,
                s if s.eq_ignore_ascii_case("MultiFactorAuthentication") => policy.mfa = true,
                _ => {}
            }
        }
    }
    if let Some(r) = rule("Approval_EndUser_Assignment") {
        policy.approval = r["setting"]["isApprovalRequired"].as_bool() == Some(true);
    }
    Ok(policy)
}

/// An ISO 8601 duration of days, hours, minutes and seconds (`PT8H`, `PT1H45M`, `P1D`,
/// `P1DT2H30M`, `PT90S`); `None` for anything else (years and months have no fixed length).
pub fn iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix(['P', 'p'])?;
    let (days, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut any = false;
    for (part, units) in [
        (days, &[('D', 86_400.0)][..]),
        (time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut number = String::new();
        let mut unit_at = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let pos = units.iter().position(|(u, _)| u.eq_ignore_ascii_case(&c))?;
            if pos < unit_at || number.is_empty() {
                return None;
            }
            secs += number.parse::<f64>().ok()? * units[pos].1;
            number.clear();
            unit_at = pos + 1;
            any = true;
        }
        if !number.is_empty() {
            return None;
        }
    }
    any.then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iso_durations_of_days_to_seconds_are_read() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(iso_duration("PT8H"), Some(h(8)));
        assert_eq!(iso_duration("PT1H45M"), Some(Duration::from_secs(6300)));
        assert_eq!(iso_duration("P1D"), Some(h(24)));
        assert_eq!(iso_duration("P1DT2H"), Some(h(26)));
        assert_eq!(iso_duration("PT90S"), Some(Duration::from_secs(90)));
        for bad in ["", "P", "PT", "8H", "PT8", "P1Y", "PTM", "PT1M2H"] {
            assert_eq!(iso_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_end_user_activation_rules_make_the_policy() {
        let rules = [
            json!({"id": "Expiration_Admin_Assignment", "isExpirationRequired": true, "maximumDuration": "P180D"}),
            json!({"id": "Expiration_EndUser_Assignment", "isExpirationRequired": true, "maximumDuration": "PT2H"}),
            json!({"id": "Enablement_EndUser_Assignment", "enabledRules": ["Justification", "Ticketing"]}),
            json!({"id": "Approval_EndUser_Assignment", "setting": {"isApprovalRequired": true}}),
        ];
        let p = policy_of(&rules).unwrap();
        assert_eq!(
            p,
            PimPolicy {
                max_duration: Some(Duration::from_secs(7200)),
                justification: true,
                ticket: true,
                mfa: false,
                approval: true,
            }
        );
        assert_eq!(
            p.to_string(),
            "activations last at most 2h; required: justification, ticket, approval"
        );
        assert!(policy_of(&[json!({"id": "Expiration_EndUser_Assignment", "isExpirationRequired": true, "maximumDuration": "soon"})]).is_err());
    }
}
