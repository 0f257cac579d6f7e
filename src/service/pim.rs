//! The service's side of the PIM poller: the [`Intake`] it hands the poller.
//!
//! The poller (`crate::drive::poller`) reads PIM and decides what changed; it reaches the
//! service only through this narrow trait: the webhook's intake, the expiry path, and the
//! activations the store records for a group.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::Service;
use crate::activation::{Accepted, ActivationRequest, Refusal};
use crate::drive::poller::Intake;
use crate::model::{AppName, SourceId};
use crate::store::{self, Activation};

/// The lease of the PIM poller (a name no app can have: app names are `[a-z0-9-]+`).
pub(super) const POLLER_LEASE: &str = "~pim-poller";

impl Intake for Service {
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
