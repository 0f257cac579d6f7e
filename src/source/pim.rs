//! PIM for Groups as a source of activations: the seam between the PIM poller and where PIM
//! is read.
//!
//! [`PimFeed`] yields a group's assignment schedule instances ([`PimInstance`]), the request
//! an instance was made from ([`PimRequest`]: justification, ticket, status) and the member
//! role's activation policy ([`PimPolicy`]); the Graph source is the production feed
//! (`assignmentScheduleInstances`, `assignmentScheduleRequests`,
//! `roleManagementPolicyAssignments`) and only it knows their JSON. The poller
//! (`crate::drive::poller`) and the service decide what they mean for activations; this
//! module only describes what is read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::model::SourceId;

/// Where the poller reads PIM for Groups assignment schedule instances.
pub trait PimFeed: Send + Sync {
    /// A short description for logs (a tenant, "scripted test feed").
    fn describe(&self) -> String;

    /// The current assignment schedule instances of `group`: Graph's
    /// `GET /v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleInstances?$filter=groupId eq '{id}'`,
    /// every page. An error means "unknown this round", never "none".
    fn active_instances(
        &self,
        group: &SourceId,
    ) -> BoxFuture<'_, Result<Vec<PimInstance>, super::Error>>;

    /// [`PimFeed::active_instances`] of each of `groups`, in their order (the Graph source
    /// reads them in `$batch`es); each group's read succeeds or fails on its own.
    fn active_instances_of<'a>(
        &'a self,
        groups: &'a [SourceId],
    ) -> BoxFuture<'a, Vec<Result<Vec<PimInstance>, super::Error>>> {
        use futures::StreamExt;
        // A few at a time: a round over a thousand groups must fit in the interval.
        Box::pin(
            futures::stream::iter(groups)
                .map(|g| self.active_instances(g))
                .buffered(8)
                .collect(),
        )
    }

    /// The request `instance` was made from (its `assignmentScheduleId` is the request's
    /// `targetScheduleId`), if the source can tell; `None`: not found.
    fn request_of<'a>(
        &'a self,
        instance: &'a PimInstance,
    ) -> BoxFuture<'a, Result<Option<PimRequest>, super::Error>> {
        let _ = instance;
        Box::pin(async { Ok(None) })
    }

    /// The member role's activation policy of `group`; `None`: the group has none (not
    /// governed by PIM) or the source keeps no policies.
    fn policy<'a>(
        &'a self,
        group: &'a SourceId,
    ) -> BoxFuture<'a, Result<Option<PimPolicy>, super::Error>> {
        let _ = group;
        Box::pin(async { Ok(None) })
    }
}

/// What PIM requires of a member activation of one group (the member role's policy rules
/// for end users' activations).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PimPolicy {
    /// The longest an activation may last (`maximumDuration`); `None`: not limited.
    pub max_duration: Option<Duration>,
    /// A justification is required (`Justification` enabled).
    pub justification: bool,
    /// Ticket information is required (`Ticketing`).
    pub ticket: bool,
    /// Multi-factor authentication is required (`MultiFactorAuthentication`).
    pub mfa: bool,
    /// An approver must approve each activation (`isApprovalRequired`).
    pub approval: bool,
}

impl std::fmt::Display for PimPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max_duration {
            Some(d) => write!(
                f,
                "activations last at most {}",
                crate::clock::show_duration(d)
            )?,
            None => write!(f, "activations are not limited in time")?,
        }
        let required: Vec<&str> = [
            (self.justification, "justification"),
            (self.ticket, "ticket"),
            (self.mfa, "MFA"),
            (self.approval, "approval"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        if required.is_empty() {
            write!(f, "; nothing else required")
        } else {
            write!(f, "; required: {}", required.join(", "))
        }
    }
}

/// The request a PIM assignment was made from (Graph's
/// `privilegedAccessGroupAssignmentScheduleRequest`), the fields an activation records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PimRequest {
    /// `status`: `Provisioned`, `PendingApproval`, … as PIM sends it.
    pub status: String,
    /// The requester's justification.
    pub justification: Option<String>,
    /// `ticketInfo.ticketNumber`.
    pub ticket_number: Option<String>,
    /// `ticketInfo.ticketSystem`.
    pub ticket_system: Option<String>,
}

/// One PIM for Groups assignment schedule instance (Graph's
/// `privilegedAccessGroupAssignmentScheduleInstance`; the Graph source reads its JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PimInstance {
    /// The instance id.
    pub id: String,
    /// The group (`groupId`).
    pub group: SourceId,
    /// The user (`principalId`).
    pub user: SourceId,
    /// `member` or `owner` (`accessId`); empty when the source sent none.
    pub access_id: String,
    /// `activated` or `assigned`, in whatever case the source sends it (`assignmentType`);
    /// empty when it sent none.
    pub assignment_type: String,
    /// When the instance started (`startDateTime`).
    pub start: Option<DateTime<Utc>>,
    /// When the instance ends (`endDateTime`); `None`: no end.
    pub end: Option<DateTime<Utc>>,
    /// The schedule the instance was created from (`assignmentScheduleId`), if sent.
    pub schedule: Option<String>,
}

impl PimInstance {
    /// Whether the instance is an activated membership (not an owner, not a permanent
    /// assignment, which the source lists as a member already).
    pub fn is_activated_member(&self) -> bool {
        self.access_id.eq_ignore_ascii_case("member")
            && self.assignment_type.eq_ignore_ascii_case("activated")
    }

    /// Whether the instance is an activated membership that has not ended at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.is_activated_member() && self.end.is_none_or(|end| end > now)
    }
}
