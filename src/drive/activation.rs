//! Activations: intake (decide per app, record, push at once) and expiry (remove at once).
//!
//! Intake ([`Service::activate`]), for every app that has the group assigned: the app's
//! limiter decides ([`crate::drive::limiter`]); allowed → pushed at once through
//! [`crate::engine::Engine::push`]; refused → deferred. Either way the activation is recorded in
//! the store *before* anything is sent, so a cycle that runs meanwhile counts it as desired
//! state (it never removes a membership a live activation backs) and a deferred activation
//! survives a restart. The next cycle applies deferred ones and counts them in
//! `deferred_applied`; a push that fails is deferred the same way.
//!
//! Expiry ([`ExpiryQueue`]): one timer loop keyed by expiry time, rebuilt from the store at
//! start-up. At expiry the membership is removed from every app at once (unless the source
//! lists the user as a member or another live activation backs it), retried with backoff until
//! the app confirms; never left to the next cycle. [`Service::end_activation`] ends an
//! activation early (the PIM poller saw it end) through the same path.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::drive::limiter::Decision;
use crate::engine::Revoked;
use crate::model::{AppName, SourceId};
use crate::service::{Service, Slot};
use crate::store::{self, Activation, PushState};

/// The webhook body of SPEC §4.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// Source id of the group.
    pub group_id: SourceId,
    /// Source id of the user.
    pub user_id: SourceId,
    /// When the activation ends (default: now + `max_activation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why an activation was refused. Nothing was recorded or sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: a field is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// 403: the source does not list the user as eligible for the group.
    #[error("{0}")]
    NotEligible(String),
    /// 404: no app has the group assigned.
    #[error("{0}")]
    NotAssigned(String),
    /// 503: the source or the store cannot be read, so the request cannot be decided.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status of SPEC §4.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Invalid(_) => 400,
            Refusal::NotEligible(_) => 403,
            Refusal::NotAssigned(_) => 404,
            Refusal::Unavailable(_) => 503,
        }
    }
}

/// The per-app outcome in the webhook's `202` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppOutcome {
    /// The app.
    pub app: String,
    /// `pushed` (sent at once) or `deferred` (the app's next cycle applies it).
    pub outcome: String,
    /// For a push the app confirmed: received → confirmed, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// For a push still unconfirmed when the answer was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfirmed: bool,
    /// Why an activation was deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The webhook's `202` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The recorded activation.
    pub activation_id: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// One entry per app with the group assigned.
    pub apps: Vec<AppOutcome>,
}

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

/// The tokio deadline of a wall-clock expiry.
fn deadline(at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

impl Service {
    /// Decides, records and pushes one activation (SPEC §4): returns once the limiter has
    /// decided for every app and the allowed pushes were confirmed (or `push_wait` passed).
    ///
    /// # Errors
    /// [`Refusal`]; nothing is recorded or sent then.
    pub async fn activate(
        &self,
        req: ActivationRequest,
        origin: &str,
    ) -> Result<Accepted, Refusal> {
        let received = Instant::now();
        let inner = &self.inner;
        let (group, user) = (req.group_id, req.user_id);
        if group.as_str().is_empty() || user.as_str().is_empty() {
            return Err(Refusal::Invalid(
                "group_id and user_id must not be empty".into(),
            ));
        }
        let now = Utc::now();
        let expires_at = match req.expires_at {
            Some(at) if at <= now => {
                return Err(Refusal::Invalid(format!(
                    "expires_at {} is not in the future",
                    at.to_rfc3339()
                )));
            }
            Some(at) => at,
            None => {
                now + chrono::Duration::from_std(inner.cfg.service.max_activation)
                    .unwrap_or(chrono::Duration::hours(8))
            }
        };
        let targets: Vec<&Slot> = inner
            .apps
            .values()
            .filter(|s| s.app.cfg.groups.contains(&group))
            .collect();
        if targets.is_empty() {
            return Err(Refusal::NotAssigned(format!(
                "no app has group {group} assigned"
            )));
        }
        self.check_eligible(&group, &user).await?;

        let activation = Activation {
            id: uuid::Uuid::new_v4().to_string(),
            group: group.clone(),
            user: user.clone(),
            expires_at,
            received_at: now,
            origin: origin.to_owned(),
        };
        let mut rows = Vec::new();
        let mut outcomes = Vec::new();
        let mut allowed: Vec<&Slot> = Vec::new();
        for slot in targets {
            let app = &slot.app.cfg.name;
            let refused = if !inner.leases.holds(app) {
                Some("another process holds the app's lease; the next cycle applies it".to_owned())
            } else {
                match inner.limiter.check(app) {
                    Decision::Allowed => None,
                    Decision::Refused { wait } => Some(format!(
                        "push_limit of {} per {} reached (next push possible in {:.1}s); the next cycle applies it",
                        slot.app.cfg.push_limit.burst,
                        humantime::format_duration(slot.app.cfg.push_limit.per),
                        wait.as_secs_f64()
                    )),
                }
            };
            match refused {
                None => {
                    rows.push((app.clone(), PushState::Pending, None));
                    allowed.push(slot);
                }
                Some(why) => {
                    crate::metrics::activation(app, "deferred");
                    rows.push((app.clone(), PushState::Deferred, Some(why.clone())));
                    outcomes.push(deferred(app, why));
                }
            }
        }
        inner
            .engine
            .store()
            .record_activation(&activation, &rows)
            .await
            .map_err(|e| Refusal::Unavailable(format!("cannot record the activation: {e}")))?;
        tracing::info!(activation = %activation.id, group = %group, user = %user,
            expires_at = %activation.expires_at.to_rfc3339(), origin, pushed = allowed.len(),
            deferred = outcomes.len(), "activation accepted");
        inner.expiry.schedule(activation.clone());

        let mut waiting = Vec::new();
        for slot in allowed {
            let (tx, rx) = oneshot::channel();
            let svc = self.clone();
            let app = slot.app.cfg.name.clone();
            let a = activation.clone();
            inner.tasks.spawn(async move {
                let outcome = svc.push(&app, &a, received).await;
                let _ = tx.send(outcome);
            });
            waiting.push((slot.app.cfg.name.clone(), rx));
        }
        let until = received + inner.options.push_wait;
        for (app, rx) in waiting {
            let outcome = match tokio::time::timeout_at(until, rx).await {
                Ok(Ok(o)) => o,
                _ => AppOutcome {
                    app: app.to_string(),
                    outcome: "pushed".into(),
                    latency_ms: None,
                    unconfirmed: true,
                    detail: Some(
                        "sent; the app had not confirmed when this answer was sent".into(),
                    ),
                },
            };
            outcomes.push(outcome);
        }
        outcomes.sort_by(|a, b| a.app.cmp(&b.app));
        Ok(Accepted {
            activation_id: activation.id,
            expires_at,
            apps: outcomes,
        })
    }

    /// 403 unless the source lists `user` as eligible for `group`. A miss on the last snapshot
    /// re-reads the source once, so a user made eligible a minute ago is not refused.
    async fn check_eligible(&self, group: &SourceId, user: &SourceId) -> Result<(), Refusal> {
        let engine = &self.inner.engine;
        let eligible = |d: &crate::model::Directory| {
            d.groups
                .get(group)
                .is_some_and(|g| g.eligible.contains(user))
        };
        if let Ok(d) = engine.directory().await
            && eligible(&d)
        {
            return Ok(());
        }
        match engine.refresh_directory().await {
            Ok(d) if eligible(&d) => Ok(()),
            Ok(d) => Err(Refusal::NotEligible(match d.groups.get(group) {
                None => format!("group {group} is not in the source"),
                Some(_) if !d.users.contains_key(user) => {
                    format!("user {user} is not in the source")
                }
                Some(_) => {
                    format!("user {user} is not eligible for group {group} according to the source")
                }
            })),
            Err(e) => Err(Refusal::Unavailable(format!(
                "the source cannot be read to check eligibility: {e}"
            ))),
        }
    }

    /// Pushes one activation to one app and records the outcome.
    async fn push(&self, app: &AppName, a: &Activation, received: Instant) -> AppOutcome {
        let inner = &self.inner;
        let store = inner.engine.store();
        let Some(slot) = inner.apps.get(app) else {
            return deferred(app, "the app is not configured".into());
        };
        let (report, held) = inner.engine.push(&slot.app, &a.group, &a.user).await;
        let latency = received.elapsed();
        let outcome = if held {
            crate::metrics::activation(app, "pushed");
            crate::metrics::activation_latency(app, latency.as_secs_f64());
            let ms = latency.as_secs_f64() * 1000.0;
            record(
                store,
                &a.id,
                app,
                PushState::Pushed,
                None,
                Some(ms.round() as i64),
            )
            .await;
            AppOutcome {
                app: app.to_string(),
                outcome: "pushed".into(),
                latency_ms: Some((ms * 10.0).round() / 10.0),
                unconfirmed: false,
                detail: None,
            }
        } else {
            crate::metrics::activation(app, "deferred");
            let why = report
                .errors
                .first()
                .map(|e| format!("{} {}: {}", e.op, e.object, e.error))
                .or(report.error)
                .unwrap_or_else(|| "the app did not confirm the membership".into());
            let why = format!("push failed ({why}); the next cycle applies it");
            tracing::warn!(app = %app, activation = %a.id, error = %why, "activation push failed; deferred");
            record(store, &a.id, app, PushState::Deferred, Some(&why), None).await;
            deferred(app, why)
        };
        // An activation that ended while its push was in flight must not stay behind.
        if a.expires_at <= Utc::now() {
            self.revoke(app, a).await;
        }
        outcome
    }

    /// Starts the expiry loop, armed with every activation the store has not finished
    /// revoking (so a restart does not leave a privilege behind).
    pub(crate) async fn spawn_expiry(
        &self,
        mut rx: mpsc::UnboundedReceiver<Activation>,
    ) -> Result<(), store::Error> {
        let mut queue: BTreeMap<(Instant, String), Activation> = BTreeMap::new();
        for row in self.inner.engine.store().unrevoked_activations().await? {
            let a = row.activation;
            queue
                .entry((deadline(a.expires_at), a.id.clone()))
                .or_insert(a);
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
                            queue.insert((deadline(a.expires_at), a.id.clone()), a);
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
            .end_activations(group, user, Utc::now())
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
        tracing::info!(activation = %a.id, group = %a.group, user = %a.user, "activation ended; removing the membership");
        for (name, slot) in &self.inner.apps {
            if !slot.app.cfg.groups.contains(&a.group) {
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
    async fn revoke(&self, app: &AppName, a: &Activation) {
        let inner = &self.inner;
        let Some(slot) = inner.apps.get(app) else {
            return;
        };
        let mut wait = Duration::from_secs(1);
        loop {
            if inner.cancel.is_cancelled() {
                return;
            }
            if inner.leases.holds(app) {
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn deferred(app: &AppName, why: String) -> AppOutcome {
    AppOutcome {
        app: app.to_string(),
        outcome: "deferred".into(),
        latency_ms: None,
        unconfirmed: false,
        detail: Some(why),
    }
}

async fn record(
    store: &store::Store,
    id: &str,
    app: &AppName,
    state: PushState,
    detail: Option<&str>,
    latency_ms: Option<i64>,
) {
    if let Err(e) = store
        .set_push_state(id, app, state, detail, latency_ms)
        .await
    {
        tracing::error!(app = %app, activation = %id, error = %e, "could not record the activation's state");
    }
}
