//! The service's side of the PIM poller: the [`Intake`] it hands the poller, and the PIM
//! policies of the assigned groups.
//!
//! The poller (`crate::drive::poller`) reads PIM and decides what changed; it reaches the
//! service only through this narrow trait: the webhook's intake, the expiry path, the
//! activations the store records for a group and the group's policy maximum.
//!
//! Policies (Graph source): every replica reads each assigned group's member-role policy at
//! start and every [`POLICY_REFRESH`], and keeps what it read in the store (`pim-policy`),
//! so a restart while Graph is unreachable still caps activations. A group whose read fails
//! keeps the policy read before.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::Service;
use crate::activation::{Accepted, ActivationRequest, Refusal};
use crate::drive::poller::Intake;
use crate::model::{AppName, SourceId};
use crate::source::PimPolicy;
use crate::store::{self, Activation, SourceState};

/// Each assigned group's PIM policy, for the groups that have one.
pub(super) type Policies = BTreeMap<SourceId, PimPolicy>;

/// How often the policies are read again.
pub const POLICY_REFRESH: Duration = Duration::from_secs(3600);

/// Where the policies last read are kept in the store.
const POLICY_KEY: &str = "pim-policy";

/// The lease of the PIM poller (a name no app can have: app names are `[a-z0-9-]+`).
pub(super) const POLLER_LEASE: &str = "~pim-poller";

impl Service {
    /// The policy maximum of `group`'s member activations, if PIM governs it.
    pub(super) fn policy_max(&self, group: &SourceId) -> Option<Duration> {
        crate::locks::read(&self.inner.policies, "policies")
            .get(group)
            .and_then(|p| p.max_duration)
    }

    /// With a PIM feed: the policies kept in the store now, then a read of every assigned
    /// group's at once and every [`POLICY_REFRESH`].
    pub(super) async fn spawn_policies(&self) {
        let Some(poll) = self.inner.options.pim.clone() else {
            return;
        };
        let store = self.inner.engine.store().clone();
        match store.source_state(POLICY_KEY).await {
            Ok(Some(kept)) => match serde_json::from_str::<Policies>(&kept.cursor) {
                Ok(p) => *crate::locks::write(&self.inner.policies, "policies") = p,
                Err(e) => {
                    tracing::warn!(error = %e, "the kept PIM policies are unreadable; reading them from the source")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kept PIM policies; reading them from the source")
            }
        }
        let svc = self.clone();
        self.inner.tasks.spawn(async move {
            let mut every = tokio::time::interval(POLICY_REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = svc.inner.cancel.cancelled() => break,
                    _ = every.tick() => {}
                }
                let mut next = crate::locks::read(&svc.inner.policies, "policies").clone();
                for group in Intake::groups(&svc) {
                    match poll.feed.policy(&group).await {
                        Ok(Some(p)) => {
                            if next.get(&group) != Some(&p) {
                                tracing::info!(group = %group, policy = %p, "PIM policy read");
                            }
                            next.insert(group, p);
                        }
                        Ok(None) => {
                            next.remove(&group);
                        }
                        Err(e) => {
                            tracing::warn!(group = %group, error = %e, "cannot read the group's PIM policy; keeping the one read before");
                        }
                    }
                }
                let text = serde_json::to_string(&next).unwrap_or_default();
                *crate::locks::write(&svc.inner.policies, "policies") = next;
                let state = SourceState { cursor: text, base: String::new() };
                if let Err(e) = store.put_source_state(POLICY_KEY, &state).await {
                    tracing::warn!(error = %e, "cannot keep the PIM policies in the store");
                }
            }
        });
    }
}

impl Intake for Service {
    fn policy_max(&self, group: &SourceId) -> Option<Duration> {
        Service::policy_max(self, group)
    }

    fn polls(&self) -> bool {
        self.inner.leases.holds(&AppName::from(POLLER_LEASE))
    }

    fn groups(&self) -> BTreeSet<SourceId> {
        self.inner
            .apps
            .values()
            .flat_map(|s| s.app.cfg.groups.iter().cloned())
            .collect()
    }

    fn pim_groups(&self) -> BTreeSet<SourceId> {
        let groups = Intake::groups(self);
        // The last snapshot says who is eligible where; without one, every assigned group.
        match self.inner.engine.cached_directory() {
            Some(dir) => groups
                .into_iter()
                .filter(|g| dir.groups.get(g).is_some_and(|g| !g.eligible.is_empty()))
                .collect(),
            None => groups,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.engine.clock().now()
    }

    fn activate(
        &self,
        req: ActivationRequest,
        origin: &'static str,
    ) -> BoxFuture<'_, Result<Accepted, Refusal>> {
        Box::pin(Service::activate(self, req, origin))
    }

    fn end_activation<'a>(
        &'a self,
        group: &'a SourceId,
        user: &'a SourceId,
    ) -> BoxFuture<'a, Result<usize, store::Error>> {
        Box::pin(Service::end_activation(self, group, user))
    }

    fn recorded<'a>(&'a self, group: &'a SourceId) -> BoxFuture<'a, Option<Vec<Activation>>> {
        Box::pin(async move {
            let store = self.inner.engine.store();
            let now = self.inner.engine.clock().now();
            let mut out = Vec::new();
            for (name, slot) in &self.inner.apps {
                if !slot.app.cfg.groups.contains(group) {
                    continue;
                }
                match store.live_activations(name, now).await {
                    Ok(live) => out.extend(
                        live.into_iter()
                            .map(|a| a.activation)
                            .filter(|a| a.group == *group),
                    ),
                    Err(e) => {
                        tracing::error!(app = %name, group = %group, error = %e,
                            "PIM poll: cannot read recorded activations; retrying next round");
                        return None;
                    }
                }
            }
            Some(out)
        })
    }
}
