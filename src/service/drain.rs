//! `[[apps]] overflow = "drain"`: activations an app's limiter deferred are pushed as soon as
//! it allows, oldest received first, never above the limit (each push asks the same limiter
//! as the webhook). Each shows as deferred until it is pushed; the next cycle applies
//! whatever is left. Only the holder of the app's lease drains, so replicas drain once.
//!
//! A drain claims a deferred row in one conditional statement before pushing it (`deferred`
//! → `pending`), so a cycle that applied it meanwhile is never raced into a second push.

use std::time::Duration;

use super::{Service, Slot};
use crate::config::Overflow;
use crate::model::AppName;
use crate::store::PushState;

/// How often an idle drain looks for deferred activations nobody told it about: recorded by
/// another replica, or left by an earlier process.
const IDLE: Duration = Duration::from_secs(1);

impl Service {
    /// One drain task per app with `overflow = "drain"`, until the service stops.
    pub(super) fn spawn_drains(&self) {
        for (app, slot) in &self.inner.apps {
            if slot.app.cfg.overflow != Overflow::Drain {
                continue;
            }
            let svc = self.clone();
            let app = app.clone();
            self.inner.tasks.spawn(async move { svc.drain(&app).await });
        }
    }

    async fn drain(&self, app: &AppName) {
        let Some(slot) = self.inner.apps.get(app) else {
            return;
        };
        let cancel = &self.inner.cancel;
        let mut next = self.drain_once(app, slot).await;
        loop {
            match next {
                // The limiter refused: nothing can be pushed before `wait`.
                Some(wait) => tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                },
                // Nothing left: wait for a deferral, or look again after a while.
                None => tokio::select! {
                    () = cancel.cancelled() => return,
                    () = slot.deferred.notified() => {}
                    () = tokio::time::sleep(IDLE) => {}
                },
            }
            next = self.drain_once(app, slot).await;
        }
    }

    /// Pushes the oldest deferred activations of `app` while its limiter allows. `Some(wait)`
    /// when the limiter refused (look again after `wait`), `None` when nothing is left (or
    /// another replica holds the app).
    async fn drain_once(&self, app: &AppName, slot: &Slot) -> Option<Duration> {
        let inner = &self.inner;
        if !inner.leases.holds(app) {
            return None;
        }
        let store = inner.engine.store();
        let now = inner.engine.clock().now();
        let rows = match store.deferred_activations(app, now).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(app = %app, error = %e, "cannot read deferred activations to drain; retrying");
                return Some(IDLE);
            }
        };
        for row in rows {
            if let Err(over) = self.limit(slot).await {
                // At least a millisecond, so a zero wait cannot spin.
                return Some(over.wait.max(Duration::from_millis(1)));
            }
            let a = row.activation;
            match store
                .transition(&a.id, app, PushState::Deferred, PushState::Pending, None)
                .await
            {
                Ok(true) => {}
                // A cycle applied it meanwhile; the cell stays spent (the limit still holds).
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(app = %app, activation = %a.id, error = %e, "cannot claim a deferred activation to drain; retrying");
                    return Some(IDLE);
                }
            }
            tracing::info!(app = %app, activation = %a.id, group = %a.group, user = %a.user,
                "deferred activation drained: pushing it now that the limit allows");
            let received = self.received_instant(&a);
            let svc = self.clone();
            let app = app.clone();
            inner.tasks.spawn(async move {
                svc.push(&app, &a, received).await;
            });
        }
        None
    }
}
