//! PIM for Groups as a source of activations: the seam between the PIM poller and where PIM
//! is read.
//!
//! [`PimFeed`] yields a group's assignment schedule instances ([`PimInstance`]); the Graph
//! source is the production feed (`assignmentScheduleInstances`) and only it knows their
//! JSON. The poller (`crate::drive::poller`) decides what they mean for activations; this
//! module only describes what is read.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

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
