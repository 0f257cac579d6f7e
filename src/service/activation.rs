//! Activation intake (SPEC §4): decide per app, record, push at once.
//!
//! For every app that has the group assigned, the app's limiter decides
//! ([`super::limiter`]); allowed → pushed at once through [`crate::engine::Engine::push`];
//! refused → deferred. Either way the activation is recorded in the store *before* anything
//! is sent, so a cycle that runs meanwhile counts it as desired state (it never removes a
//! membership a live activation backs) and a deferred activation survives a restart. The
//! next cycle applies deferred ones and counts them in `deferred_applied`; a push that fails
//! is deferred the same way. Expiry is the sibling `expiry` module.
//!
//! A repeat for a (group, user) that is already live (SPEC §4) is answered before the
//! limiter: nothing is sent, no slot is used, no row is added; the live activation's expiry
//! becomes the later of the two (one store statement, so racing replicas agree), its timer is
//! re-armed, and each app answers `active` (or `deferred`, with its detail, while it still is).
//! The timer armed for the old expiry finds the later one in the store when it fires and
//! re-arms instead of removing (see `expiry`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::forward::FORWARDED;
use super::limiter::Decision;
use super::{Service, Slot};
use crate::activation::{
    Accepted, ActivationRequest, AppOutcome, JUSTIFICATION_MAX, Outcome, Refusal, TICKET_MAX,
};
use crate::config::Overflow;
use crate::model::{AppName, SourceId};
use crate::source::Eligibility;
use crate::store::{self, Activation, PushState};

/// An activation the app's `push_limit` refused.
pub(super) struct Over {
    /// Why, as recorded with the deferred activation.
    pub(super) why: String,
    /// When the next push would pass.
    pub(super) wait: Duration,
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
        for (field, value, max) in [
            ("justification", &req.justification, JUSTIFICATION_MAX),
            ("ticket_number", &req.ticket_number, TICKET_MAX),
            ("ticket_system", &req.ticket_system, TICKET_MAX),
        ] {
            if let Some(n) = value.as_deref().map(|v| v.chars().count())
                && n > max
            {
                return Err(Refusal::Invalid(format!(
                    "{field} is {n} characters long; at most {max} are allowed"
                )));
            }
        }
        let now = inner.engine.clock().now();
        // A webhook activation lasts no longer than the group's PIM policy allows either.
        let policy_max = (origin == crate::activation::WEBHOOK_ORIGIN)
            .then(|| self.policy_max(&group))
            .flatten();
        let expires_at = expiry(
            now,
            req.expires_at,
            origin,
            inner.cfg.service.max_activation,
            policy_max,
        )?;
        // A push group's member goes only to the apps that list the group in push_groups,
        // and is checked as a member, not as eligible.
        let push_group = origin == super::push_groups::ORIGIN;
        let targets: Vec<&Slot> = inner
            .apps
            .values()
            .filter(|s| {
                if push_group {
                    s.app.cfg.push_groups.contains(&group)
                } else {
                    s.app.cfg.groups.contains(&group)
                }
            })
            .collect();
        if targets.is_empty() {
            return Err(Refusal::NotAssigned(format!(
                "no app has group {group} assigned"
            )));
        }
        if push_group {
            self.check_member(&group, &user).await?;
        } else {
            self.check_eligible(&group, &user).await?;
        }
        if let Some(accepted) = self
            .repeat(&group, &user, expires_at, &targets, now)
            .await?
        {
            return Ok(accepted);
        }

        let activation = Activation {
            id: uuid::Uuid::new_v4().to_string(),
            group: group.clone(),
            user: user.clone(),
            expires_at,
            received_at: now,
            origin: origin.to_owned(),
            justification: req.justification,
            ticket_number: req.ticket_number,
            ticket_system: req.ticket_system,
        };
        let mut rows = Vec::new();
        let mut outcomes = Vec::new();
        let mut allowed: Vec<&Slot> = Vec::new();
        let mut forwarded: Vec<AppName> = Vec::new();
        for slot in targets {
            let app = &slot.app.cfg.name;
            let refused = if inner.leases.holds(app) {
                self.limit(slot).await.err().map(|over| over.why)
            } else {
                // Another replica writes to the app: its limiter decides (the limit holds
                // across the cluster), through the store.
                match inner.engine.store().lease(app, Utc::now()).await {
                    Ok(Some(_)) => {
                        rows.push((app.clone(), PushState::Forwarded, Some(FORWARDED.to_owned())));
                        forwarded.push(app.clone());
                        continue;
                    }
                    Ok(None) => Some(
                        "no replica holds the app's lease (failover in progress); the next cycle applies it"
                            .to_owned(),
                    ),
                    Err(e) => Some(format!(
                        "the app's lease cannot be read ({e}); the next cycle applies it"
                    )),
                }
            };
            match refused {
                None => {
                    rows.push((app.clone(), PushState::Pending, None));
                    allowed.push(slot);
                }
                Some(why) => {
                    crate::metrics::activation(app, Outcome::Deferred.as_str());
                    rows.push((app.clone(), PushState::Deferred, Some(why.clone())));
                    outcomes.push(AppOutcome::deferred(app, why));
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
            deferred = outcomes.len(), justification = activation.justification.as_deref(),
            ticket_number = activation.ticket_number.as_deref(),
            ticket_system = activation.ticket_system.as_deref(), "activation accepted");
        inner.expiry.schedule(activation.clone());
        if origin == crate::activation::WEBHOOK_ORIGIN {
            crate::metrics::detection_latency(origin, received.elapsed().as_secs_f64());
        }

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
                    outcome: Outcome::Pushed,
                    latency_ms: None,
                    unconfirmed: true,
                    detail: Some(
                        "sent; the app had not confirmed when this answer was sent".into(),
                    ),
                },
            };
            outcomes.push(outcome);
        }
        for app in forwarded {
            outcomes.push(self.await_holder(&activation.id, &app, until).await);
        }
        outcomes.sort_by(|a, b| a.app.cmp(&b.app));
        Ok(Accepted {
            activation_id: activation.id,
            expires_at,
            apps: outcomes,
        })
    }

    /// Asks `slot`'s limiter for one push. Refused: why (for the activation's record) and
    /// when the next push would pass; an app with `overflow = "drain"` is told to drain.
    pub(super) async fn limit(&self, slot: &Slot) -> Result<(), Over> {
        self.sync_quota(slot).await;
        match self.inner.limiter.check(&slot.app.cfg.name) {
            Decision::Allowed => Ok(()),
            Decision::Refused { wait } => {
                let drain = slot.app.cfg.overflow == Overflow::Drain;
                if drain {
                    slot.deferred.notify_one();
                }
                let then = if drain {
                    "it is pushed as soon as the limit allows"
                } else {
                    "the next cycle applies it"
                };
                Err(Over {
                    why: format!(
                        "push_limit of {} per {} reached (next push possible in {:.1}s); {then}",
                        slot.app.cfg.push_limit.burst,
                        humantime::format_duration(slot.app.cfg.push_limit.per),
                        wait.as_secs_f64()
                    ),
                    wait,
                })
            }
        }
    }

    /// The moment on tokio's clock at which `a` was received (latency counts from there),
    /// for an activation this process did not receive just now (another replica's, or a
    /// deferred one).
    pub(super) fn received_instant(&self, a: &Activation) -> Instant {
        let waited = (self.inner.engine.clock().now() - a.received_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        Instant::now()
            .checked_sub(waited)
            .unwrap_or_else(Instant::now)
    }

    /// Before the first push under a lease generation (this process started, or took the
    /// app over), spends of the limiter the pushes the store records within the quota's
    /// window before this process took the lease: earlier holders made them, so the app's
    /// `push_limit` holds across a failover or a restart instead of starting afresh. A store
    /// that cannot say spends nothing.
    async fn sync_quota(&self, slot: &Slot) {
        let inner = &self.inner;
        let app = &slot.app.cfg.name;
        let Some((generation, taken_at)) = inner.leases.generation(app) else {
            return;
        };
        let mut synced = slot.quota_synced.lock().await;
        if *synced == Some(generation) {
            return;
        }
        let window = chrono::Duration::from_std(slot.app.cfg.push_limit.per)
            .unwrap_or(chrono::Duration::MAX);
        let since = taken_at
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match inner
            .engine
            .store()
            .pushes_between(app, since, taken_at)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                inner.limiter.spend(app, n);
                tracing::info!(app = %app, n, "pushes made by an earlier holder within the push_limit window count against this process's quota");
            }
            Err(e) => {
                tracing::warn!(app = %app, error = %e, "could not count the earlier holder's recent pushes; the push quota starts afresh");
            }
        }
        *synced = Some(generation);
    }

    /// A repeat of a live activation of (`group`, `user`) (SPEC §4): extends it to end at the
    /// later of its expiry and `expires_at`, re-arms its timer and answers, per target app,
    /// `active` (pushed, applied or in flight) or `deferred` with its detail. Sends nothing and
    /// uses no limiter slot. `None` when the pair has no live activation, or one that some
    /// target app does not hold (not recorded for it, or already removed from it): the
    /// request is then a new activation.
    ///
    /// # Errors
    /// [`Refusal::Unavailable`] when the store cannot be read or written.
    async fn repeat(
        &self,
        group: &SourceId,
        user: &SourceId,
        expires_at: DateTime<Utc>,
        targets: &[&Slot],
        now: DateTime<Utc>,
    ) -> Result<Option<Accepted>, Refusal> {
        let inner = &self.inner;
        let store = inner.engine.store();
        let rows = store
            .live_activation_of(group, user, now)
            .await
            .map_err(|e| {
                Refusal::Unavailable(format!(
                    "cannot read the live activation of user {user} in group {group}: {e}"
                ))
            })?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut outcomes = Vec::new();
        for slot in targets {
            let app = &slot.app.cfg.name;
            let Some(row) = rows.iter().find(|r| &r.app == app) else {
                return Ok(None);
            };
            outcomes.push(match row.state {
                PushState::Pending | PushState::Pushed | PushState::Applied => AppOutcome {
                    app: app.to_string(),
                    outcome: Outcome::Active,
                    latency_ms: None,
                    unconfirmed: false,
                    detail: None,
                },
                PushState::Deferred | PushState::Forwarded => AppOutcome::deferred(
                    app,
                    row.detail
                        .clone()
                        .unwrap_or_else(|| "deferred; the next cycle applies it".into()),
                ),
                PushState::Removed => return Ok(None),
            });
        }
        let mut activation = first.activation.clone();
        let extended = store
            .extend_activation(&activation.id, expires_at, now)
            .await
            .map_err(|e| {
                Refusal::Unavailable(format!(
                    "cannot extend activation {} of user {user} in group {group}: {e}",
                    activation.id
                ))
            })?;
        // Ended between the read and the extension: the request is a new activation.
        let Some(until) = extended else {
            return Ok(None);
        };
        activation.expires_at = until;
        for o in &outcomes {
            crate::metrics::activation(&AppName::new(o.app.clone()), o.outcome.as_str());
        }
        tracing::info!(activation = %activation.id, group = %group, user = %user,
            expires_at = %until.to_rfc3339(), "repeat of a live activation: nothing sent, expiry is the later of the two");
        inner.expiry.schedule(activation.clone());
        outcomes.sort_by(|a, b| a.app.cmp(&b.app));
        Ok(Some(Accepted {
            activation_id: activation.id,
            expires_at: until,
            apps: outcomes,
        }))
    }

    /// 403 unless the source lists `user` as eligible for `group`. The last snapshot
    /// answers first; on a miss the source is asked cheaply (an unchanged directory file, or
    /// one targeted Graph request), and only when that cannot tell, or says "eligible" (the
    /// push needs the user's attributes), is the whole source read again. A refusal never
    /// costs a full read when the source can say no on its own.
    async fn check_eligible(&self, group: &SourceId, user: &SourceId) -> Result<(), Refusal> {
        let engine = &self.inner.engine;
        // Listed as eligible, and a user the source has (a dangling id has nothing to push).
        let eligible = |d: &crate::model::Directory| {
            d.users.contains_key(user)
                && d.groups
                    .get(group)
                    .is_some_and(|g| g.eligible.contains(user))
        };
        let cached = engine.directory().await.ok();
        if cached.as_deref().is_some_and(eligible) {
            return Ok(());
        }
        let dir = match (engine.eligibility(group, user).await, cached) {
            (Eligibility::Current, Some(d)) => d,
            (Eligibility::NotEligible, _) => {
                return Err(Refusal::NotEligible(format!(
                    "user {user} is not eligible for group {group} according to the source"
                )));
            }
            _ => engine.refresh_directory().await.map_err(|e| {
                Refusal::Unavailable(format!(
                    "the source cannot be read to check eligibility: {e}"
                ))
            })?,
        };
        if eligible(&dir) {
            return Ok(());
        }
        Err(Refusal::NotEligible(match dir.groups.get(group) {
            None => format!("group {group} is not in the source"),
            Some(_) if !dir.users.contains_key(user) => {
                format!("user {user} is not in the source")
            }
            Some(_) => {
                format!("user {user} is not eligible for group {group} according to the source")
            }
        }))
    }

    /// 403 unless the last snapshot lists `user` as a member of push group `group`.
    async fn check_member(&self, group: &SourceId, user: &SourceId) -> Result<(), Refusal> {
        let dir = self.inner.engine.directory().await.map_err(|e| {
            Refusal::Unavailable(format!(
                "the source cannot be read to check membership: {e}"
            ))
        })?;
        if !dir.users.contains_key(user) {
            Err(Refusal::NotEligible(format!(
                "user {user} is not in the source"
            )))
        } else if dir
            .groups
            .get(group)
            .is_some_and(|g| g.members.contains(user))
        {
            Ok(())
        } else {
            Err(Refusal::NotEligible(format!(
                "user {user} is not a member of push group {group} according to the source"
            )))
        }
    }

    /// Pushes one activation to one app and records the outcome.
    pub(super) async fn push(
        &self,
        app: &AppName,
        a: &Activation,
        received: Instant,
    ) -> AppOutcome {
        let inner = &self.inner;
        let store = inner.engine.store();
        let Some(slot) = inner.apps.get(app) else {
            return AppOutcome::deferred(app, "the app is not configured".into());
        };
        let (report, held) = inner.engine.push(&slot.app, &a.group, &a.user).await;
        let latency = received.elapsed();
        let outcome = if held {
            crate::metrics::activation(app, Outcome::Pushed.as_str());
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
                outcome: Outcome::Pushed,
                latency_ms: Some((ms * 10.0).round() / 10.0),
                unconfirmed: false,
                detail: None,
            }
        } else {
            crate::metrics::activation(app, Outcome::Deferred.as_str());
            let why = report
                .errors
                .first()
                .map(|e| format!("{} {}: {}", e.op, e.object, e.error))
                .or(report.error)
                .unwrap_or_else(|| "the app did not confirm the membership".into());
            let why = format!("push failed ({why}); the next cycle applies it");
            tracing::warn!(app = %app, activation = %a.id, error = %why, "activation push failed; deferred");
            record(store, &a.id, app, PushState::Deferred, Some(&why), None).await;
            AppOutcome::deferred(app, why)
        };
        // An activation that ended while its push was in flight must not stay behind.
        if a.expires_at <= inner.engine.clock().now() {
            self.revoke(app, a).await;
        }
        outcome
    }
}

/// Records where activation `id` stands in `app`; a store error is logged (the next start
/// or cycle looks again).
pub(super) async fn record(
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

/// The longest any activation lasts, whatever its origin: PIM's own maximum.
const CEILING: Duration = Duration::from_secs(24 * 3600);

/// When an activation received at `now` ends. One reported through our API (the webhook,
/// `activate`) defaults to, and may not exceed, `max_activation`, and is capped at the
/// group's PIM policy maximum (`policy_max`) when that is lower; one the PIM poller read
/// keeps PIM's `endDateTime` (the poller capped it at the policy), cut at 24 hours.
fn expiry(
    now: DateTime<Utc>,
    asked: Option<DateTime<Utc>>,
    origin: &str,
    max_activation: Duration,
    policy_max: Option<Duration>,
) -> Result<DateTime<Utc>, Refusal> {
    let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(24));
    let max = now + span(max_activation.min(CEILING));
    let policy = policy_max.map(|p| now + span(p.min(CEILING)));
    match asked {
        Some(at) if at <= now => Err(Refusal::Invalid(format!(
            "expires_at {} is not in the future",
            at.to_rfc3339()
        ))),
        Some(at) if origin == crate::drive::poller::ORIGIN => Ok(at.min(now + span(CEILING))),
        Some(at) if at > max => Err(Refusal::Invalid(format!(
            "expires_at {} is later than now + service.max_activation ({}): an activation may last at most {}",
            at.to_rfc3339(),
            humantime::format_duration(max_activation),
            humantime::format_duration(max_activation)
        ))),
        Some(at) => Ok(policy.map_or(at, |p| at.min(p))),
        None => Ok(policy.map_or(max, |p| max.min(p))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_bounded_by_max_activation_or_pim_ceiling() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = chrono::Duration::hours;
        let eight = Duration::from_secs(8 * 3600);
        assert_eq!(expiry(now, None, "webhook", eight, None), Ok(now + h(8)));
        assert_eq!(
            expiry(now, Some(now + h(8)), "webhook", eight, None),
            Ok(now + h(8))
        );
        let far = DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let Err(Refusal::Invalid(why)) = expiry(now, Some(far), "webhook", eight, None) else {
            panic!("a permanent privilege through the webhook was accepted");
        };
        assert!(why.contains("service.max_activation (8h)"), "{why}");
        assert!(matches!(
            expiry(now, Some(now - h(1)), "webhook", eight, None),
            Err(Refusal::Invalid(_))
        ));
        // PIM's own end is kept, up to 24 hours.
        let pim = crate::drive::poller::ORIGIN;
        assert_eq!(
            expiry(now, Some(now + h(12)), pim, eight, None),
            Ok(now + h(12))
        );
        assert_eq!(expiry(now, Some(far), pim, eight, None), Ok(now + h(24)));
        // A group whose PIM policy allows 2 hours caps webhook activations at 2 hours, asked
        // or not; a later end than max_activation is still refused.
        let two = Some(Duration::from_secs(2 * 3600));
        assert_eq!(expiry(now, None, "webhook", eight, two), Ok(now + h(2)));
        assert_eq!(
            expiry(now, Some(now + h(4)), "webhook", eight, two),
            Ok(now + h(2))
        );
        assert_eq!(
            expiry(now, Some(now + h(1)), "webhook", eight, two),
            Ok(now + h(1))
        );
        assert!(expiry(now, Some(far), "webhook", eight, two).is_err());
    }
}
