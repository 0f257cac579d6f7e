//! Push groups (`[[apps]] push_groups`): a plain membership change in one of an app's push
//! groups is pushed at once instead of waiting for the next cycle. An addition goes through
//! the webhook's path (the app's limiter, pushed or deferred, shown in `status`) as an
//! activation of origin [`ORIGIN`] lasting `max_activation`, after which the source's
//! membership keeps it; a removal is removed at once through the expiry path, unless another
//! live activation or the source still backs it. Only apps that list the group in
//! `push_groups` are touched; the others wait for their cycle.
//!
//! With the file source the directory file is watched; with the Graph source a scoped
//! `groups/delta` is read every `watch_interval` by the replica that runs the PIM poller
//! ([`crate::drive::watch`]). Either way the source is then read (for Graph, a delta round:
//! the user's attributes come with it) and compared with the push groups' members of the
//! last snapshot seen; a read that fails, or that lacks a push group, pushes and removes
//! nothing for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::BoxFuture;

use super::Service;
use crate::activation::ActivationRequest;
use crate::config::SourceConfig;
use crate::drive::watch::Changes;
use crate::model::{Directory, SourceId};
use crate::source::MemberChange;
use crate::store::{Activation, PushState};

/// The origin of activations a push group made.
pub const ORIGIN: &str = "push-group";

/// Each push group's members in the last snapshot seen.
pub(super) type Seen = BTreeMap<SourceId, BTreeSet<SourceId>>;

impl Changes for Service {
    fn changed<'a>(&'a self, expected: &'a [MemberChange]) -> BoxFuture<'a, bool> {
        Box::pin(self.push_group_changes(expected))
    }

    fn watching(&self) -> bool {
        self.inner
            .leases
            .holds(&crate::model::AppName::from(super::pim::POLLER_LEASE))
    }
}

/// Whether `dir` shows where each of `expected` leaves its (group, user): a member after
/// the last addition, not one after the last removal.
fn shows(dir: &Directory, expected: &[MemberChange]) -> bool {
    let mut last = BTreeMap::new();
    for c in expected {
        last.insert((&c.group, &c.user), c.added);
    }
    last.into_iter().all(|((group, user), added)| {
        dir.groups
            .get(group)
            .is_some_and(|g| g.members.contains(user) == added)
    })
}

impl Service {
    /// Every app's push groups.
    fn push_groups(&self) -> BTreeSet<SourceId> {
        self.inner
            .apps
            .values()
            .flat_map(|s| s.app.cfg.push_groups.iter().cloned())
            .collect()
    }

    /// With push groups: remembers the push groups' members and watches them until the
    /// service stops (the directory file, or the source's [`crate::drive::watch::PushWatch`]).
    pub(super) fn spawn_push_watch(&self) {
        if self.push_groups().is_empty() {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let watched = match (svc.inner.options.watch.clone(), &svc.inner.cfg.source) {
                (Some(watch), _) => {
                    let what = format!(
                        "{} every {}",
                        watch.feed.describe(),
                        crate::clock::show_duration(watch.every)
                    );
                    svc.inner.tasks.spawn(crate::drive::watch::poll(
                        watch,
                        Arc::new(svc.clone()),
                        svc.inner.cancel.clone(),
                    ));
                    what
                }
                (None, SourceConfig::File { path }) => {
                    let changes = Arc::new(svc.clone());
                    match crate::drive::watch::spawn(path, changes, svc.inner.cancel.clone()) {
                        Ok(()) => format!("the directory file {}", path.display()),
                        Err(e) => {
                            tracing::error!(error = %e, "push groups: the directory file is not watched; their changes wait for the next cycle");
                            return;
                        }
                    }
                }
                (None, _) => {
                    tracing::warn!(
                        "push groups: the source has no watch; their changes wait for the next cycle"
                    );
                    return;
                }
            };
            // The baseline: the snapshot the start-up cycle applies (a change read first
            // already set it, and what differs now is pushed like any change).
            match svc.inner.engine.directory().await {
                Ok(d) => svc.act_on(&d).await,
                Err(e) => {
                    tracing::warn!(error = %e, "push groups: the directory file cannot be read yet; the first change read sets the baseline");
                }
            }
            tracing::info!(watching = %watched, groups = svc.push_groups().len(), "push groups: watching");
        });
    }

    /// Records `dir`'s push-group members as seen; returns what was added and removed
    /// since the last snapshot seen (nothing the first time, nor for a group `dir` lacks).
    fn seen_update(&self, dir: &Directory) -> Vec<(SourceId, SourceId, bool)> {
        let mut changes = Vec::new();
        let mut seen = crate::locks::lock(&self.inner.push_seen, "push groups");
        let first = seen.is_none();
        let seen = seen.get_or_insert_with(Seen::new);
        for group in self.push_groups() {
            let Some(g) = dir.groups.get(&group) else {
                tracing::warn!(group = %group, "push groups: the directory file lacks the group; nothing pushed or removed for it");
                continue;
            };
            let now: BTreeSet<SourceId> = g.members.iter().cloned().collect();
            if !first && let Some(before) = seen.get(&group) {
                changes.extend(
                    now.difference(before)
                        .map(|u| (group.clone(), u.clone(), true)),
                );
                changes.extend(
                    before
                        .difference(&now)
                        .map(|u| (group.clone(), u.clone(), false)),
                );
            }
            seen.insert(group, now);
        }
        changes
    }

    /// Reads the source and pushes what changed in the push groups; whether the read
    /// succeeded and shows each of `expected`.
    async fn push_group_changes(&self, expected: &[MemberChange]) -> bool {
        // With the file source, a change's age is the file's: how long since it was written.
        let written = match &self.inner.cfg.source {
            SourceConfig::File { path } if self.inner.options.watch.is_none() => {
                std::fs::metadata(path).and_then(|m| m.modified()).ok()
            }
            _ => None,
        };
        let dir = match self.inner.engine.refresh_directory().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "push groups: the source cannot be read; nothing pushed or removed");
                return false;
            }
        };
        let changes = self.seen_update(&dir);
        if !changes.is_empty()
            && let Some(age) = written.and_then(|w| w.elapsed().ok())
        {
            crate::metrics::detection_latency(ORIGIN, age.as_secs_f64());
        }
        self.act(changes).await;
        shows(&dir, expected)
    }

    /// Pushes what `dir` changed in the push groups since the last snapshot seen.
    async fn act_on(&self, dir: &Directory) {
        self.act(self.seen_update(dir)).await;
    }

    /// Pushes each (group, user, added) change: an addition as an activation, a removal
    /// through the expiry path.
    async fn act(&self, changes: Vec<(SourceId, SourceId, bool)>) {
        for (group, user, added) in changes {
            if added {
                self.push_member(group, user).await;
            } else {
                self.remove_member(&group, &user).await;
            }
        }
    }

    /// A user added to a push group: an activation through the webhook's path.
    async fn push_member(&self, group: SourceId, user: SourceId) {
        let req = ActivationRequest {
            group_id: group.clone(),
            user_id: user.clone(),
            expires_at: None,
            justification: None,
            ticket_number: None,
            ticket_system: None,
        };
        match self.activate(req, ORIGIN).await {
            Ok(a) => {
                let outcomes: Vec<String> = a
                    .apps
                    .iter()
                    .map(|o| format!("{}: {}", o.app, o.outcome))
                    .collect();
                tracing::info!(group = %group, user = %user, outcomes = ?outcomes, "push group: member added");
            }
            Err(e) => {
                tracing::warn!(group = %group, user = %user, error = %e, "push group: the added member was not pushed; the next cycle adds it")
            }
        }
    }

    /// A user removed from a push group: what the push group pushed ends now, and the
    /// membership is removed through the expiry path (kept if something else backs it).
    async fn remove_member(&self, group: &SourceId, user: &SourceId) {
        let inner = &self.inner;
        let store = inner.engine.store();
        let now = inner.engine.clock().now();
        let ended = match store
            .end_activations_from(group, user, Some(ORIGIN), now)
            .await
        {
            Ok(ended) => ended,
            Err(e) => {
                tracing::error!(group = %group, user = %user, error = %e, "push group: cannot end the member's activation; the next cycle removes it");
                return;
            }
        };
        tracing::info!(group = %group, user = %user, "push group: member removed; removing the membership now");
        if !ended.is_empty() {
            for a in ended {
                self.expire_in_push_apps(a);
            }
            return;
        }
        // The membership came with a cycle: record its end, then remove it the same way.
        let a = Activation {
            id: uuid::Uuid::new_v4().to_string(),
            group: group.clone(),
            user: user.clone(),
            expires_at: now,
            received_at: now,
            origin: ORIGIN.to_owned(),
            justification: None,
            ticket_number: None,
            ticket_system: None,
        };
        let rows: Vec<_> = inner
            .apps
            .iter()
            .filter(|(_, s)| s.app.cfg.push_groups.contains(group))
            .map(|(name, _)| {
                (
                    name.clone(),
                    PushState::Applied,
                    Some("member by a cycle until removed from the push group".to_owned()),
                )
            })
            .collect();
        if let Err(e) = store.record_activation(&a, &rows).await {
            tracing::error!(group = %group, user = %user, error = %e, "push group: cannot record the removal; the next cycle removes it");
            return;
        }
        self.expire_in_push_apps(a);
    }

    /// Removes `a` from each app that lists its group in `push_groups`.
    fn expire_in_push_apps(&self, a: Activation) {
        self.expire_where(a, |cfg, group| cfg.push_groups.contains(group));
    }
}
