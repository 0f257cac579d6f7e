//! Replicas (SPEC §7.1): an activation received by a replica that does not hold an app's
//! lease is decided by the replica that does, through the store.
//!
//! The receiving replica records the app's row as [`PushState::Forwarded`] and waits (up to
//! `push_wait`) for the row to move. The holder's intake loop reads forwarded rows every
//! [`POLL`], claims each one in one conditional statement (so nothing is decided twice, and a
//! claim lost to a cycle that already applied it is left alone), asks its own limiter, so the
//! app's limit holds across the cluster, and pushes or defers exactly as for an activation it
//! received itself. It also arms the activation's expiry, since only the holder removes it.
//! A row no holder claimed (the holder died) is claimed by the next holder, or applied by
//! its take-over cycle: an accepted activation is never lost.

use std::time::Duration;

use tokio::time::Instant;

use super::Service;
use crate::activation::{AppOutcome, Outcome};
use crate::model::AppName;
use crate::store::PushState;

/// How often a holder looks for activations other replicas forwarded to it.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// The detail of a forwarded row until the holder decides.
pub(super) const FORWARDED: &str =
    "received by another replica; waiting for the replica that holds the app's lease to decide";

impl Service {
    /// The holder's side: decides forwarded activations until the service stops.
    pub(super) fn spawn_forwarded(&self) {
        let svc = self.clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = svc.inner.cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                svc.take_forwarded().await;
            }
        });
    }

    /// One look: claims and decides every forwarded activation of an app this process holds.
    async fn take_forwarded(&self) {
        let inner = &self.inner;
        let store = inner.engine.store();
        let rows = match store.forwarded_activations().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read forwarded activations; retrying");
                return;
            }
        };
        for row in rows {
            let app = &row.app;
            let Some(slot) = inner.apps.get(app) else {
                continue;
            };
            if !inner.leases.holds(app) {
                continue;
            }
            let a = row.activation;
            match store
                .transition(&a.id, app, PushState::Forwarded, PushState::Pending, None)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(app = %app, activation = %a.id, error = %e, "cannot claim a forwarded activation; retrying");
                    continue;
                }
            }
            inner.expiry.schedule(a.clone());
            if let Err(over) = self.limit(slot).await {
                let why = over.why;
                crate::metrics::activation(app, Outcome::Deferred.as_str());
                super::activation::record(store, &a.id, app, PushState::Deferred, Some(&why), None)
                    .await;
                continue;
            }
            // Latency counts from when the other replica received it.
            let received = self.received_instant(&a);
            let svc = self.clone();
            let app = app.clone();
            inner.tasks.spawn(async move {
                svc.push(&app, &a, received).await;
            });
        }
    }

    /// The receiving replica's side: waits until `until` for the holder's decision on
    /// activation `id` in `app`, and answers it as the app's outcome.
    pub(super) async fn await_holder(&self, id: &str, app: &AppName, until: Instant) -> AppOutcome {
        let store = self.inner.engine.store();
        let mut last = PushState::Forwarded;
        loop {
            match store.app_activation(id, app).await {
                Ok(Some(row)) => {
                    last = row.state;
                    match row.state {
                        PushState::Pushed | PushState::Applied | PushState::Removed => {
                            return AppOutcome {
                                app: app.to_string(),
                                outcome: Outcome::Pushed,
                                latency_ms: row.latency_ms.map(|ms| ms as f64),
                                unconfirmed: false,
                                detail: Some(
                                    "pushed by the replica that holds the app's lease".into(),
                                ),
                            };
                        }
                        PushState::Deferred => {
                            return AppOutcome::deferred(app, row.detail.unwrap_or_default());
                        }
                        PushState::Forwarded | PushState::Pending => {}
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(app = %app, activation = %id, error = %e, "cannot read the holder's decision");
                }
            }
            if Instant::now() >= until {
                break;
            }
            tokio::time::sleep(POLL / 2).await;
        }
        if last == PushState::Pending {
            AppOutcome {
                app: app.to_string(),
                outcome: Outcome::Pushed,
                latency_ms: None,
                unconfirmed: true,
                detail: Some(
                    "sent by the replica that holds the app's lease; the app had not confirmed when this answer was sent"
                        .into(),
                ),
            }
        } else {
            AppOutcome::deferred(
                app,
                "forwarded to the replica that holds the app's lease, which had not decided when this answer was sent; it or the app's next cycle applies it".into(),
            )
        }
    }
}
