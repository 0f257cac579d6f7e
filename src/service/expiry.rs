//! Expiry (SPEC §6.5): an ended activation leaves every app at once.
//!
//! One timer loop keyed by expiry time ([`ExpiryQueue`]), rebuilt from the store at start-up,
//! with deadlines computed from the engine's [`crate::clock::Clock`] (so tests run it under
//! paused time). At expiry the membership is removed from every app at once (unless the
//! source lists the user as a member or another live activation backs it), retried with
//! backoff until the app confirms; never left to the next cycle.
//! [`Service::end_activation`] ends an activation early (the PIM poller saw it end) through
//! the same path.
//!
//! A repeat activation may extend a live one after its timer was armed, on this replica or
//! another. The queue keeps the first deadline of an id, so before removing anything a
//! revocation reads the activation's expiry from the store again: when it now lies in the
//! future, the timer is re-armed for it and nothing is removed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Service;
use super::activation::record;
use crate::engine::Revoked;
use crate::model::{AppName, SourceId};
use crate::store::{self, Activation, PushState};

/// The expiry timers' intake.
pub struct ExpiryQueue {
    tx: mpsc::UnboundedSender<Activation>,
}

impl ExpiryQueue {
    /// A queue and the receiver its loop reads.
    pub fn new() -> (ExpiryQueue, mpsc::UnboundedReceiver<Activation>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ExpiryQueue { tx }, rx)
    }

    /// Arms the timer of `a`.
    pub fn schedule(&self, a: Activation) {
        let _ = self.tx.send(a);
    }
}

impl Service {
    /// Starts the expiry loop, armed with every activation the store has not finished
    /// revoking (so a restart does not leave a privilege behind).
    pub(super) async fn spawn_expiry(
        &self,
        mut rx: mpsc::UnboundedReceiver<Activation>,
    ) -> Result<(), store::Error> {
        let clock = self.inner.engine.clock().clone();
        let mut queue: BTreeMap<(Instant, String), Activation> = BTreeMap::new();
        // Ids armed and not yet fired: an activation is armed once, however often it is
        // scheduled (once per app at start-up, again when a lease is taken over).
        let mut armed: HashSet<String> = HashSet::new();
        for row in self.inner.engine.store().unrevoked_activations().await? {
            let a = row.activation;
            if armed.insert(a.id.clone()) {
                queue.insert((clock.deadline(a.expires_at), a.id.clone()), a);
            }
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let cancel = svc.inner.cancel.clone();
            loop {
                let next = queue.keys().next().map(|(at, _)| *at);
                tokio::select! {
                    () = cancel.cancelled() => break,
                    got = rx.recv() => match got {
                        Some(a) => {
                            if armed.insert(a.id.clone()) {
                                queue.insert((clock.deadline(a.expires_at), a.id.clone()), a);
                            }
                        }
                        None => break,
                    },
                    () = sleep_until(next) => {
                        let now = Instant::now();
                        while let Some(entry) = queue.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            let a = entry.remove();
                            armed.remove(&a.id);
                            svc.expire(a);
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Ends every live activation of (`group`, `user`) now, before its expiry: the PIM source
    /// says the membership ended early. Each one goes through the expiry path, as if its timer
    /// fired: removed from every app at once, retried until the app confirms, and kept when
    /// the source lists the user as a member. (The original timer still fires later and finds
    /// nothing left to remove.) Returns how many activations were ended (0 when
    /// none was live).
    ///
    /// # Errors
    /// [`store::Error`] when the store cannot be read or written; nothing changes then.
    pub async fn end_activation(
        &self,
        group: &SourceId,
        user: &SourceId,
    ) -> Result<usize, store::Error> {
        let ended = self
            .inner
            .engine
            .store()
            .end_activations(group, user, self.inner.engine.clock().now())
            .await?;
        let n = ended.len();
        for a in ended {
            self.expire(a);
        }
        Ok(n)
    }

    /// Removes an ended activation from every app that has the group assigned, each in its
    /// own task, retrying until the app confirms.
    fn expire(&self, a: Activation) {
        self.expire_where(a, |cfg, group| cfg.groups.contains(group));
    }

    /// [`Service::expire`] in the apps whose config `applies` to the activation's group.
    pub(super) fn expire_where(
        &self,
        a: Activation,
        applies: fn(&crate::config::AppConfig, &SourceId) -> bool,
    ) {
        tracing::info!(activation = %a.id, group = %a.group, user = %a.user, "activation ended; removing the membership");
        for (name, slot) in &self.inner.apps {
            if !applies(&slot.app.cfg, &a.group) {
                continue;
            }
            let svc = self.clone();
            let app = name.clone();
            let a = a.clone();
            self.inner.tasks.spawn(async move {
                svc.revoke(&app, &a).await;
            });
        }
    }

    /// Removes one ended activation from one app, retrying with backoff until the app
    /// confirms or the service stops (the next start retries then).
    pub(super) async fn revoke(&self, app: &AppName, a: &Activation) {
        let inner = &self.inner;
        let Some(slot) = inner.apps.get(app) else {
            return;
        };
        let mut wait = Duration::from_secs(1);
        loop {
            if inner.cancel.is_cancelled() {
                return;
            }
            if !inner.leases.holds(app) {
                // Another replica writes to the app: once it recorded the removal, this
                // process has nothing left to do.
                if let Ok(Some(row)) = inner.engine.store().app_activation(&a.id, app).await
                    && row.state == PushState::Removed
                {
                    tracing::info!(app = %app, activation = %a.id,
                        "the replica that holds the app's lease removed the membership; this process sent nothing");
                    return;
                }
            } else {
                match self.extended(a).await {
                    Ok(Some(later)) => {
                        tracing::info!(app = %app, activation = %a.id, expires_at = %later.expires_at.to_rfc3339(),
                            "activation was extended; its timer is re-armed, nothing removed");
                        inner.expiry.schedule(later);
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(app = %app, activation = %a.id, error = %e,
                            retry_in = %humantime::format_duration(wait), "cannot read the activation's expiry; retrying");
                        tokio::select! {
                            () = inner.cancel.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(Duration::from_secs(60));
                        continue;
                    }
                }
                let result = inner.engine.revoke(&slot.app, a).await;
                let done = match result {
                    Revoked::Removed => Some("removed at expiry".to_owned()),
                    Revoked::Kept(why) => Some(format!("kept at expiry: {why}")),
                    Revoked::Failed(e) => {
                        crate::metrics::revocation(app, "retry");
                        tracing::warn!(app = %app, activation = %a.id, error = %e,
                            retry_in = %humantime::format_duration(wait), "expiry removal not confirmed; retrying");
                        None
                    }
                };
                // A cycle running meanwhile may have planned the membership before the
                // activation ended: look again once it is done.
                let done = match done {
                    Some(detail) if slot.busy.try_lock().is_err() => {
                        drop(slot.busy.lock().await);
                        match inner.engine.revoke(&slot.app, a).await {
                            Revoked::Failed(e) => {
                                tracing::warn!(app = %app, activation = %a.id, error = %e, "second look after a running cycle failed; retrying");
                                None
                            }
                            _ => Some(detail),
                        }
                    }
                    other => other,
                };
                if let Some(detail) = done {
                    crate::metrics::revocation(app, "removed");
                    tracing::info!(app = %app, activation = %a.id, detail = %detail, "activation ended in the app");
                    record(
                        inner.engine.store(),
                        &a.id,
                        app,
                        PushState::Removed,
                        Some(&detail),
                        None,
                    )
                    .await;
                    return;
                }
            }
            tokio::select! {
                () = inner.cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}

impl Service {
    /// `a` with the expiry the store has for it now, when a repeat extended it past the
    /// expiry its timer was armed for and that lies in the future; `None` when the timer is
    /// for its current expiry (a deadline met, even a hair early, is not re-armed again), it
    /// has ended, or it is unknown (e.g. pruned).
    async fn extended(&self, a: &Activation) -> Result<Option<Activation>, store::Error> {
        let now = self.inner.engine.clock().now();
        Ok(self
            .inner
            .engine
            .store()
            .activation_expiry(&a.id)
            .await?
            .filter(|at| *at > a.expires_at && *at > now)
            .map(|at| Activation {
                expires_at: at,
                ..a.clone()
            }))
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
