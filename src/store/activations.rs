//! PIM activations in the state store (SPEC §4, §6.4, §6.5): which (group, user) pairs are
//! members on top of the source, until when, and where each activation stands in each app.
//!
//! The store only remembers; the service decides. It records an activation with one row per
//! app (pushed at once, or deferred by the limiter), moves each row through [`PushState`] as
//! pushes, cycles and expiries confirm, and lists what a cycle must still apply, what the
//! expiry timers must revoke, and what is live (a cycle never removes a membership that an
//! unexpired activation backs). Everything survives a restart.
//!
//! Replicas sharing a PostgreSQL store call these at once: each write is one statement or one
//! transaction whose outcome does not depend on a read made before it (ending activations is
//! one `UPDATE … RETURNING`, so each is ended, and handed back for revocation, exactly once).

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Error, Store, db};
use crate::model::{AppName, SourceId};

/// A PIM activation: (group, user) is a member until `expires_at`, on top of the source.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Activation {
    /// Unique id (the webhook answers it as `activation_id`).
    pub id: String,
    /// Source id of the group.
    pub group: SourceId,
    /// Source id of the user.
    pub user: SourceId,
    /// When the membership ends.
    pub expires_at: DateTime<Utc>,
    /// When the service learnt of the activation.
    pub received_at: DateTime<Utc>,
    /// Where it came from: `webhook`, `pim-poll`, `demo`, … (free text).
    pub origin: String,
    /// Why the privilege was asked for, as the request gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The ticket the activation serves, as the request gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    /// The system that ticket lives in, as the request gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_system: Option<String>,
}

/// Where one activation stands for one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushState {
    /// Received by a replica that does not hold the app's lease: waiting for the holder to
    /// decide (its limiter), through the store.
    Forwarded,
    /// Allowed by the limiter; the push is in flight.
    Pending,
    /// The app confirmed the push.
    Pushed,
    /// Refused by the limiter, or the push failed: the next cycle applies it.
    Deferred,
    /// Deferred, then applied by a cycle.
    Applied,
    /// Expired, and the app confirmed the removal (or never had the membership).
    Removed,
}

impl PushState {
    /// Stable text form, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Forwarded => "forwarded",
            PushState::Pending => "pending",
            PushState::Pushed => "pushed",
            PushState::Deferred => "deferred",
            PushState::Applied => "applied",
            PushState::Removed => "removed",
        }
    }

    /// Parses the stored text form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "forwarded" => Some(PushState::Forwarded),
            "pending" => Some(PushState::Pending),
            "pushed" => Some(PushState::Pushed),
            "deferred" => Some(PushState::Deferred),
            "applied" => Some(PushState::Applied),
            "removed" => Some(PushState::Removed),
            _ => None,
        }
    }
}

/// One activation as it stands for one app.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppActivation {
    /// The activation.
    #[serde(flatten)]
    pub activation: Activation,
    /// The app.
    pub app: AppName,
    /// Where it stands in that app.
    pub state: PushState,
    /// Why it was deferred, the last push or removal error, …
    pub detail: Option<String>,
    /// Milliseconds from receipt to the app's confirmation, once known.
    pub latency_ms: Option<i64>,
    /// When `state` last changed.
    pub updated_at: DateTime<Utc>,
}

/// A query of app activations: the columns [`app_activation`] reads, from `activation_apps aa`
/// joined to `activations a`, then the given `WHERE …` text. A macro so the SQL stays static.
macro_rules! select_app_activations {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.group_id, a.user_id, a.expires_at, a.received_at, a.origin,
               a.justification, a.ticket_number, a.ticket_system, aa.app, aa.state, aa.detail, aa.latency_ms, aa.updated_at
             FROM activation_apps aa JOIN activations a ON a.id = aa.activation_id ",
            $rest
        )
    };
}

impl Store {
    /// Records a new activation and where it stands in each of `apps` (state and detail), in
    /// one transaction. `updated_at` of each app row is now.
    ///
    /// # Errors
    /// [`Error::Db`], e.g. when the id is already recorded; nothing is recorded then.
    pub async fn record_activation(
        &self,
        a: &Activation,
        apps: &[(AppName, PushState, Option<String>)],
    ) -> Result<(), Error> {
        let now = stamp(Utc::now());
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(db("begin"))?;
            sqlx::query(
                "INSERT INTO activations (id, group_id, user_id, expires_at, expires_ms, received_at, origin,
                   justification, ticket_number, ticket_system, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                   (SELECT COALESCE(MAX(seq), 0) + 1 FROM activations))",
            )
            .bind(&a.id)
            .bind(a.group.as_str())
            .bind(a.user.as_str())
            .bind(stamp(a.expires_at))
            .bind(a.expires_at.timestamp_millis())
            .bind(stamp(a.received_at))
            .bind(&a.origin)
            .bind(a.justification.as_deref())
            .bind(a.ticket_number.as_deref())
            .bind(a.ticket_system.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db("record activation"))?;
            for (app, state, detail) in apps {
                sqlx::query(
                    "INSERT INTO activation_apps (activation_id, app, state, detail, latency_ms, updated_at)
                     VALUES ($1, $2, $3, $4, NULL, $5)",
                )
                .bind(&a.id)
                .bind(app.as_str())
                .bind(state.as_str())
                .bind(detail.as_deref())
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(db("record activation app"))?;
            }
            tx.commit().await.map_err(db("commit"))
        })
    }

    /// Moves activation `id` to `state` in `app`, with `detail` (replacing the previous one,
    /// `None` clears it) and, when given, `latency_ms` (`None` keeps the previous one).
    /// `updated_at` becomes now. An unknown (id, app) changes nothing.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn set_push_state(
        &self,
        id: &str,
        app: &AppName,
        state: PushState,
        detail: Option<&str>,
        latency_ms: Option<i64>,
    ) -> Result<(), Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE activation_apps SET state = $3, detail = $4,
                   latency_ms = COALESCE($5, latency_ms), updated_at = $6
                 WHERE activation_id = $1 AND app = $2",
            )
            .bind(id)
            .bind(app.as_str())
            .bind(state.as_str())
            .bind(detail)
            .bind(latency_ms)
            .bind(stamp(Utc::now()))
            .execute(p)
            .await
            .map(|_| ())
        })
        .map_err(db("set push state"))?;
        Ok(())
    }

    /// Moves activation `id` in `app` from `from` to `to`, only if it is still `from`: one
    /// statement, so of several replicas racing for a forwarded activation exactly one
    /// claims it. Returns whether this call moved it.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn transition(
        &self,
        id: &str,
        app: &AppName,
        from: PushState,
        to: PushState,
        detail: Option<&str>,
    ) -> Result<bool, Error> {
        let moved = on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE activation_apps SET state = $4, detail = $5, updated_at = $6
                 WHERE activation_id = $1 AND app = $2 AND state = $3",
            )
            .bind(id)
            .bind(app.as_str())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(detail)
            .bind(stamp(Utc::now()))
            .execute(p)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(db("move push state"))?;
        Ok(moved == 1)
    }

    /// Where activation `id` stands in `app`, if the store has it.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn app_activation(
        &self,
        id: &str,
        app: &AppName,
    ) -> Result<Option<AppActivation>, Error> {
        let row: Option<AppActivationRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_app_activations!(
                "WHERE aa.activation_id = $1 AND aa.app = $2"
            ))
            .bind(id)
            .bind(app.as_str())
            .fetch_optional(p)
            .await
        })
        .map_err(db("read activation"))?;
        row.map(app_activation).transpose()
    }

    /// Every activation waiting for its app's lease holder to decide ([`PushState::Forwarded`]),
    /// in any app, oldest first: one indexed query for a holder's intake loop.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn forwarded_activations(&self) -> Result<Vec<AppActivation>, Error> {
        let rows: Vec<AppActivationRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_app_activations!(
                "WHERE aa.state = 'forwarded' ORDER BY a.received_at, a.seq, a.id, aa.app"
            ))
            .fetch_all(p)
            .await
        })
        .map_err(db("read forwarded activations"))?;
        rows.into_iter().map(app_activation).collect()
    }

    /// Activations of `app` unexpired at `now` and not removed, in any other state: the
    /// memberships the app holds or should hold on top of the source. Oldest received first.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn live_activations(
        &self,
        app: &AppName,
        now: DateTime<Utc>,
    ) -> Result<Vec<AppActivation>, Error> {
        let rows: Vec<AppActivationRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_app_activations!(
                "WHERE aa.app = $1 AND aa.state != 'removed' AND a.expires_ms > $2
                 ORDER BY a.received_at, a.seq, a.id"
            ))
            .bind(app.as_str())
            .bind(now.timestamp_millis())
            .fetch_all(p)
            .await
        })
        .map_err(db("read live activations"))?;
        rows.into_iter().map(app_activation).collect()
    }

    /// Activations deferred in `app` and unexpired at `now`: what the next cycle applies.
    /// Oldest received first.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn deferred_activations(
        &self,
        app: &AppName,
        now: DateTime<Utc>,
    ) -> Result<Vec<AppActivation>, Error> {
        let rows: Vec<AppActivationRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_app_activations!(
                "WHERE aa.app = $1 AND aa.state = 'deferred' AND a.expires_ms > $2
                 ORDER BY a.received_at, a.seq, a.id"
            ))
            .bind(app.as_str())
            .bind(now.timestamp_millis())
            .fetch_all(p)
            .await
        })
        .map_err(db("read deferred activations"))?;
        rows.into_iter().map(app_activation).collect()
    }

    /// Every app row, of every app, not yet removed, expired or not: what the expiry timers
    /// must revoke (at start-up, the ones already due first). Soonest expiry first.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn unrevoked_activations(&self) -> Result<Vec<AppActivation>, Error> {
        let rows: Vec<AppActivationRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_app_activations!(
                "WHERE aa.state != 'removed' ORDER BY a.expires_ms, a.id, aa.app"
            ))
            .fetch_all(p)
            .await
        })
        .map_err(db("read unrevoked activations"))?;
        rows.into_iter().map(app_activation).collect()
    }

    /// Whether an activation other than `except_id` backs (`group`, `user`) unexpired at `now`,
    /// so that the expiry of `except_id` must not remove the membership.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn other_live_activation(
        &self,
        group: &SourceId,
        user: &SourceId,
        except_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM activations
                   WHERE group_id = $1 AND user_id = $2 AND id != $3 AND expires_ms > $4)",
            )
            .bind(group.as_str())
            .bind(user.as_str())
            .bind(except_id)
            .bind(now.timestamp_millis())
            .fetch_one(p)
            .await
        })
        .map_err(db("read other activations"))
    }

    /// The live activation of (`group`, `user`) at `now`, as it stands in each app it
    /// concerns (app order): the unexpired one that ends last, when several are. Empty when
    /// none is unexpired. A repeat activation of the pair extends this one instead of adding
    /// another (SPEC §4).
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn live_activation_of(
        &self,
        group: &SourceId,
        user: &SourceId,
        now: DateTime<Utc>,
    ) -> Result<Vec<AppActivation>, Error> {
        // One statement: the activation and its app rows are read together.
        let rows: Vec<AppActivationRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_app_activations!(
                "WHERE a.id = (SELECT id FROM activations
                     WHERE group_id = $1 AND user_id = $2 AND expires_ms > $3
                     ORDER BY expires_ms DESC, id LIMIT 1)
                 ORDER BY aa.app"
            ))
            .bind(group.as_str())
            .bind(user.as_str())
            .bind(now.timestamp_millis())
            .fetch_all(p)
            .await
        })
        .map_err(db("read the live activation of a pair"))?;
        rows.into_iter().map(app_activation).collect()
    }

    /// Makes activation `id` end at the later of its expiry and `expires_at`, if it is still
    /// unexpired at `now`. Returns when it ends now, or `None` when it is unknown or already
    /// expired (nothing changed then).
    ///
    /// One statement, so replicas extending the same activation at once both end with the
    /// later expiry, and an activation that ended meanwhile is never revived.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn extend_activation(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let at: Option<String> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "UPDATE activations
                 SET expires_at = CASE WHEN expires_ms < $2 THEN $3 ELSE expires_at END,
                     expires_ms = CASE WHEN expires_ms < $2 THEN $2 ELSE expires_ms END
                 WHERE id = $1 AND expires_ms > $4
                 RETURNING expires_at",
            )
            .bind(id)
            .bind(expires_at.timestamp_millis())
            .bind(stamp(expires_at))
            .bind(now.timestamp_millis())
            .fetch_optional(p)
            .await
        })
        .map_err(db("extend activation"))?;
        at.map(|at| instant("(any)", "activation expiry", &at))
            .transpose()
    }

    /// When activation `id` ends as the store has it now (a repeat may have extended it since
    /// its timer was armed), or `None` when it is unknown.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn activation_expiry(&self, id: &str) -> Result<Option<DateTime<Utc>>, Error> {
        let at: Option<String> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT expires_at FROM activations WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await
        })
        .map_err(db("read activation expiry"))?;
        at.map(|at| instant("(any)", "activation expiry", &at))
            .transpose()
    }

    /// Turns every `pending` row, of every app, into `deferred` with `detail`: pushes that did
    /// not finish (at shutdown, or found at start-up after a crash) are left to the next
    /// cycle. Returns how many rows changed.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn pending_to_deferred(&self, detail: &str) -> Result<u64, Error> {
        let done = on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE activation_apps SET state = 'deferred', detail = $1, updated_at = $2
                 WHERE state = 'pending'",
            )
            .bind(detail)
            .bind(stamp(Utc::now()))
            .execute(p)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(db("defer pending activations"))?;
        Ok(done)
    }

    /// [`Store::pending_to_deferred`] for one app only: the pushes a replica that lost (or
    /// never had) the app's lease left unconfirmed, when this process takes the lease.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn pending_to_deferred_in(&self, app: &AppName, detail: &str) -> Result<u64, Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE activation_apps SET state = 'deferred', detail = $1, updated_at = $2
                 WHERE state = 'pending' AND app = $3",
            )
            .bind(detail)
            .bind(stamp(Utc::now()))
            .bind(app.as_str())
            .execute(p)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(db("defer pending activations"))
    }

    /// How many pushes to `app` the store records as last updated in `[from, to)`, sent or
    /// confirmed and not yet removed: what earlier holders of the app's lease spent of its
    /// push quota before this process took it at `to`.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn pushes_between(
        &self,
        app: &AppName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, Error> {
        let n: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM activation_apps
                 WHERE app = $1 AND state IN ('pending', 'pushed')
                   AND updated_at >= $2 AND updated_at < $3",
            )
            .bind(app.as_str())
            .bind(stamp(from))
            .bind(stamp(to))
            .fetch_one(p)
            .await
        })
        .map_err(db("count recent pushes"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the store records `user` as a member of `group` in `app` (as last confirmed by
    /// the app).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn has_member(
        &self,
        app: &AppName,
        group: &SourceId,
        user: &SourceId,
    ) -> Result<bool, Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM scim_members
                   WHERE app = $1 AND group_id = $2 AND user_id = $3)",
            )
            .bind(app.as_str())
            .bind(group.as_str())
            .bind(user.as_str())
            .fetch_one(p)
            .await
        })
        .map_err(db("read member"))
    }

    /// Ends early, at `at`, every activation of (`group`, `user`) that is unexpired at `at`:
    /// their expiry becomes `at`, so cycles stop counting them as desired and
    /// [`Store::other_live_activation`] (which looks at expiries only, whatever the app rows
    /// say) no longer finds them. Returns the ended activations with their new expiry, for the
    /// caller to revoke.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`]; nothing changes then.
    pub async fn end_activations(
        &self,
        group: &SourceId,
        user: &SourceId,
        at: DateTime<Utc>,
    ) -> Result<Vec<Activation>, Error> {
        self.end_activations_from(group, user, None, at).await
    }

    /// [`Store::end_activations`] for the activations of one `origin` only (`None`: every
    /// origin): a push group's removal ends what the push group pushed, not a PIM activation
    /// of the same pair.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`]; nothing changes then.
    pub async fn end_activations_from(
        &self,
        group: &SourceId,
        user: &SourceId,
        origin: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Vec<Activation>, Error> {
        // One statement: concurrent callers (replicas) each get only the activations they
        // ended. On PostgreSQL a second `UPDATE` waits for the first's row locks, then
        // re-checks `expires_ms > $3` on the new rows and skips them. In a transaction, so
        // that an unreadable row leaves everything as it was.
        let mut ended = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(db("begin"))?;
            let rows: Vec<EndedRow> = sqlx::query_as(
                "UPDATE activations SET expires_at = $4, expires_ms = $3
                 WHERE group_id = $1 AND user_id = $2 AND expires_ms > $3
                   AND origin = COALESCE($5, origin)
                 RETURNING id, group_id, user_id, received_at, origin,
                   justification, ticket_number, ticket_system",
            )
            .bind(group.as_str())
            .bind(user.as_str())
            .bind(at.timestamp_millis())
            .bind(stamp(at))
            .bind(origin)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("end activations"))?;
            let ended = rows
                .into_iter()
                .map(
                    |(
                        id,
                        group,
                        user,
                        received_at,
                        origin,
                        justification,
                        ticket_number,
                        ticket_system,
                    )| {
                        Ok(Activation {
                            id,
                            group: SourceId::new(group),
                            user: SourceId::new(user),
                            expires_at: at,
                            received_at: instant("(any)", "activation receipt time", &received_at)?,
                            origin,
                            justification,
                            ticket_number,
                            ticket_system,
                        })
                    },
                )
                .collect::<Result<Vec<_>, Error>>()?;
            tx.commit().await.map_err(db("commit"))?;
            Ok::<_, Error>(ended)
        })?;
        // `RETURNING` has no order; received (then id) order, as listed elsewhere.
        ended.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok(ended)
    }

    /// Forgets activations that expired before `before` and are removed from every app (with
    /// their app rows). Returns how many activations were deleted.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn prune_activations(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(db("begin"))?;
            // The app rows are deleted explicitly too, so pruning does not depend on the
            // connection enforcing foreign keys.
            sqlx::query(
                "DELETE FROM activation_apps WHERE activation_id IN
                   (SELECT id FROM activations a WHERE a.expires_ms < $1 AND NOT EXISTS
                     (SELECT 1 FROM activation_apps aa
                       WHERE aa.activation_id = a.id AND aa.state != 'removed'))",
            )
            .bind(before.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(db("prune activation apps"))?;
            // Every app row of a prunable activation is gone now: the same test finds them.
            let done = sqlx::query(
                "DELETE FROM activations WHERE expires_ms < $1 AND NOT EXISTS
                   (SELECT 1 FROM activation_apps aa
                     WHERE aa.activation_id = activations.id AND aa.state != 'removed')",
            )
            .bind(before.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(db("prune activations"))?;
            tx.commit().await.map_err(db("commit"))?;
            Ok(done.rows_affected())
        })
    }
}

/// A timestamp as stored: RFC 3339 in UTC with nanoseconds, so that it reads back exactly and
/// sorts as text.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads back a stored timestamp.
fn instant(app: &str, what: &'static str, s: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Corrupt {
            app: app.to_owned(),
            what,
            detail: format!("{s:?}: {e}"),
        })
}

/// One row of `end_activations`' `RETURNING`.
type EndedRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One row of [`select_app_activations`].
type AppActivationRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<i64>,
    String,
);

/// Reads one row of [`select_app_activations`].
fn app_activation(row: AppActivationRow) -> Result<AppActivation, Error> {
    let (
        id,
        group,
        user,
        expires_at,
        received_at,
        origin,
        justification,
        ticket_number,
        ticket_system,
        app,
        state,
        detail,
        latency_ms,
        updated_at,
    ) = row;
    let state = PushState::parse(&state).ok_or_else(|| Error::Corrupt {
        app: app.clone(),
        what: "activation state",
        detail: format!("{state:?}"),
    })?;
    Ok(AppActivation {
        activation: Activation {
            id,
            group: SourceId::new(group),
            user: SourceId::new(user),
            expires_at: instant(&app, "activation expiry", &expires_at)?,
            received_at: instant(&app, "activation receipt time", &received_at)?,
            origin,
            justification,
            ticket_number,
            ticket_system,
        },
        state,
        detail,
        latency_ms,
        updated_at: instant(&app, "activation update time", &updated_at)?,
        app: AppName::new(app),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::model::attrs_from_json;
    use crate::model::{ObservedUser, Origin, ScimId};
    use crate::store::Change;
    use crate::store::testing::TestDb;

    fn t0() -> DateTime<Utc> {
        // Sub-millisecond digits check that timestamps read back exactly.
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn act(id: &str, group: &str, user: &str, received: i64, expires: i64) -> Activation {
        Activation {
            id: id.into(),
            group: group.into(),
            user: user.into(),
            expires_at: t0() + TimeDelta::seconds(expires),
            received_at: t0() + TimeDelta::seconds(received),
            origin: "webhook".into(),
            justification: None,
            ticket_number: None,
            ticket_system: None,
        }
    }

    fn crm() -> AppName {
        AppName::from("crm")
    }

    fn hr() -> AppName {
        AppName::from("hr")
    }

    fn ids(rows: &[AppActivation]) -> Vec<(String, String)> {
        rows.iter()
            .map(|r| (r.activation.id.clone(), r.app.to_string()))
            .collect()
    }

    fn pair(id: &str, app: &str) -> (String, String) {
        (id.to_owned(), app.to_owned())
    }

    async fn row(store: &Store, id: &str, app: &str) -> Option<AppActivation> {
        store
            .unrevoked_activations()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.activation.id == id && r.app.as_str() == app)
    }

    #[test]
    fn push_state_text_round_trips() {
        for s in [
            PushState::Pending,
            PushState::Pushed,
            PushState::Deferred,
            PushState::Applied,
            PushState::Removed,
        ] {
            assert_eq!(PushState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(PushState::parse("Pushed"), None);
    }

    async fn listings_filter_on_app_state_and_expiry(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        let a1 = act("a1", "g1", "u1", -10, 3600);
        let a2 = act("a2", "g1", "u2", -3600, -1); // expired, never removed
        let a3 = act("a3", "g1", "u3", -20, 3600); // removed while unexpired: not live
        let a4 = act("a4", "g2", "u1", -30, 60); // received first
        let a5 = act("a5", "g2", "u2", -5, 0); // expires exactly now: expired
        store
            .record_activation(
                &a1,
                &[
                    (crm(), PushState::Pushed, None),
                    (hr(), PushState::Deferred, Some("limited".into())),
                ],
            )
            .await
            .unwrap();
        store
            .record_activation(&a2, &[(crm(), PushState::Deferred, None)])
            .await
            .unwrap();
        store
            .record_activation(&a3, &[(crm(), PushState::Removed, None)])
            .await
            .unwrap();
        store
            .record_activation(&a4, &[(crm(), PushState::Deferred, None)])
            .await
            .unwrap();
        store
            .record_activation(&a5, &[(crm(), PushState::Deferred, None)])
            .await
            .unwrap();

        let live = store.live_activations(&crm(), now).await.unwrap();
        assert_eq!(ids(&live), [pair("a4", "crm"), pair("a1", "crm")]);
        assert_eq!(live[1].activation, a1, "read back exactly");
        assert_eq!(live[1].state, PushState::Pushed);
        assert_eq!(live[1].detail, None);
        assert_eq!(live[1].latency_ms, None);

        let hr_live = store.live_activations(&hr(), now).await.unwrap();
        assert_eq!(ids(&hr_live), [pair("a1", "hr")]);
        assert_eq!(hr_live[0].detail.as_deref(), Some("limited"));

        let deferred = store.deferred_activations(&crm(), now).await.unwrap();
        assert_eq!(ids(&deferred), [pair("a4", "crm")], "a2 and a5 expired");
        let deferred = store.deferred_activations(&hr(), now).await.unwrap();
        assert_eq!(ids(&deferred), [pair("a1", "hr")]);
        let earlier = now - TimeDelta::seconds(7200);
        let deferred = store.deferred_activations(&crm(), earlier).await.unwrap();
        assert_eq!(
            ids(&deferred),
            [pair("a2", "crm"), pair("a4", "crm"), pair("a5", "crm")],
            "unexpired two hours earlier"
        );
        assert!(
            store
                .live_activations(&AppName::from("other"), now)
                .await
                .unwrap()
                .is_empty()
        );

        // Any expiry, every app, never removed ones; soonest expiry first.
        let unrevoked = store.unrevoked_activations().await.unwrap();
        assert_eq!(
            ids(&unrevoked),
            [
                pair("a2", "crm"),
                pair("a5", "crm"),
                pair("a4", "crm"),
                pair("a1", "crm"),
                pair("a1", "hr"),
            ]
        );

        let json = serde_json::to_value(&hr_live[0]).unwrap();
        assert_eq!(json["id"], "a1");
        assert_eq!(json["group"], "g1");
        assert_eq!(json["user"], "u1");
        assert_eq!(json["app"], "hr");
        assert_eq!(json["state"], "deferred");
        assert_eq!(json["origin"], "webhook");
    }

    async fn record_is_one_transaction(db: &TestDb) {
        let store = db.open().await;
        let a = act("a1", "g1", "u1", 0, 60);
        // The second row for crm breaks the primary key: nothing may stay behind.
        let e = store
            .record_activation(
                &a,
                &[
                    (crm(), PushState::Pushed, None),
                    (crm(), PushState::Pushed, None),
                ],
            )
            .await;
        assert!(e.is_err());
        assert!(store.unrevoked_activations().await.unwrap().is_empty());
        assert!(
            !store
                .other_live_activation(&"g1".into(), &"u1".into(), "x", t0())
                .await
                .unwrap(),
            "the activation row was rolled back"
        );
        store
            .record_activation(&a, &[(crm(), PushState::Pushed, None)])
            .await
            .unwrap();
        assert!(
            store
                .record_activation(&a, &[(hr(), PushState::Pushed, None)])
                .await
                .is_err(),
            "an id is recorded once"
        );
        assert_eq!(
            ids(&store.unrevoked_activations().await.unwrap()),
            [pair("a1", "crm")]
        );
    }

    async fn push_state_transitions(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        let a = act("a1", "g1", "u1", 0, 60);
        store
            .record_activation(
                &a,
                &[
                    (crm(), PushState::Deferred, Some("limited".into())),
                    (hr(), PushState::Pending, None),
                ],
            )
            .await
            .unwrap();
        let before = row(&store, "a1", "crm").await.unwrap().updated_at;

        store
            .set_push_state("a1", &crm(), PushState::Applied, None, Some(1200))
            .await
            .unwrap();
        let r = row(&store, "a1", "crm").await.unwrap();
        assert_eq!(r.state, PushState::Applied);
        assert_eq!(r.detail, None, "detail replaced");
        assert_eq!(r.latency_ms, Some(1200));
        assert!(r.updated_at >= before);
        assert!(
            store
                .deferred_activations(&crm(), now)
                .await
                .unwrap()
                .is_empty()
        );
        // Only crm moved.
        assert_eq!(
            row(&store, "a1", "hr").await.unwrap().state,
            PushState::Pending
        );

        store
            .set_push_state(
                "a1",
                &crm(),
                PushState::Deferred,
                Some("removal failed"),
                None,
            )
            .await
            .unwrap();
        let r = row(&store, "a1", "crm").await.unwrap();
        assert_eq!(r.state, PushState::Deferred);
        assert_eq!(r.detail.as_deref(), Some("removal failed"));
        assert_eq!(r.latency_ms, Some(1200), "kept when not given");

        store
            .set_push_state("a1", &crm(), PushState::Removed, None, None)
            .await
            .unwrap();
        assert!(row(&store, "a1", "crm").await.is_none());
        assert_eq!(
            ids(&store.live_activations(&crm(), now).await.unwrap()),
            Vec::<(String, String)>::new()
        );
        assert_eq!(
            ids(&store.live_activations(&hr(), now).await.unwrap()),
            [pair("a1", "hr")]
        );

        // Unknown rows: nothing happens.
        store
            .set_push_state("nope", &crm(), PushState::Pushed, None, None)
            .await
            .unwrap();
        store
            .set_push_state("a1", &AppName::from("other"), PushState::Pushed, None, None)
            .await
            .unwrap();
        assert_eq!(store.unrevoked_activations().await.unwrap().len(), 1);
    }

    async fn pending_becomes_deferred(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        store
            .record_activation(
                &act("a1", "g1", "u1", 0, 60),
                &[
                    (crm(), PushState::Pending, None),
                    (hr(), PushState::Pushed, None),
                ],
            )
            .await
            .unwrap();
        store
            .record_activation(
                &act("a2", "g1", "u2", 1, 60),
                &[(hr(), PushState::Pending, None)],
            )
            .await
            .unwrap();
        assert_eq!(store.pending_to_deferred("interrupted").await.unwrap(), 2);
        let crm_deferred = store.deferred_activations(&crm(), now).await.unwrap();
        assert_eq!(ids(&crm_deferred), [pair("a1", "crm")]);
        assert_eq!(crm_deferred[0].detail.as_deref(), Some("interrupted"));
        let hr_deferred = store.deferred_activations(&hr(), now).await.unwrap();
        assert_eq!(ids(&hr_deferred), [pair("a2", "hr")], "pushed untouched");
        assert_eq!(
            row(&store, "a1", "hr").await.unwrap().state,
            PushState::Pushed
        );
        assert_eq!(store.pending_to_deferred("again").await.unwrap(), 0);
    }

    async fn other_live_activation_backs_the_pair(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        store
            .record_activation(
                &act("a1", "g1", "u1", 0, -1),
                &[(crm(), PushState::Pushed, None)],
            )
            .await
            .unwrap();
        store
            .record_activation(
                &act("a2", "g1", "u1", 0, 60),
                &[(crm(), PushState::Pushed, None)],
            )
            .await
            .unwrap();
        store
            .record_activation(
                &act("a3", "g2", "u2", 0, 60),
                &[(crm(), PushState::Pushed, None)],
            )
            .await
            .unwrap();
        let (g1, u1) = (SourceId::from("g1"), SourceId::from("u1"));
        assert!(
            store
                .other_live_activation(&g1, &u1, "a1", now)
                .await
                .unwrap(),
            "a2 backs (g1, u1)"
        );
        assert!(
            !store
                .other_live_activation(&g1, &u1, "a2", now)
                .await
                .unwrap(),
            "a1 expired"
        );
        assert!(
            !store
                .other_live_activation(&g1, &u1, "a1", now + TimeDelta::seconds(60))
                .await
                .unwrap(),
            "a2 expired by then"
        );
        assert!(
            !store
                .other_live_activation(&g1, &"u2".into(), "a1", now)
                .await
                .unwrap(),
            "another user"
        );
        assert!(
            !store
                .other_live_activation(&"g2".into(), &"u2".into(), "a3", now)
                .await
                .unwrap(),
            "itself does not count"
        );
    }

    async fn end_activations_shortens_only_live_ones_of_the_pair(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        // a1 and a2 back (g1, u1); a3 is removed but unexpired, which still counts as another
        // live activation; a4 expired; a5 another user.
        for (a, state) in [
            (act("a1", "g1", "u1", -20, 60), PushState::Pushed),
            (act("a2", "g1", "u1", -10, 120), PushState::Deferred),
            (act("a3", "g1", "u1", -5, 60), PushState::Removed),
            (act("a4", "g1", "u1", -100, -1), PushState::Pushed),
            (act("a5", "g1", "u2", -5, 60), PushState::Pushed),
        ] {
            store
                .record_activation(&a, &[(crm(), state, None)])
                .await
                .unwrap();
        }
        let (g1, u1) = (SourceId::from("g1"), SourceId::from("u1"));
        let ended = store.end_activations(&g1, &u1, now).await.unwrap();
        let ids: Vec<&str> = ended.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2", "a3"]);
        assert!(ended.iter().all(|a| a.expires_at == now && a.user == u1));
        assert!(
            !store
                .other_live_activation(&g1, &u1, "x", now)
                .await
                .unwrap()
        );
        let live = store.live_activations(&crm(), now).await.unwrap();
        let live: Vec<&str> = live.iter().map(|a| a.activation.id.as_str()).collect();
        assert_eq!(live, ["a5"], "the other user's activation is untouched");
        assert!(
            store
                .end_activations(&g1, &u1, now)
                .await
                .unwrap()
                .is_empty()
        );
    }

    async fn prune_forgets_only_fully_removed_and_old(db: &TestDb) {
        let store = db.open().await;
        let removed = |app| (app, PushState::Removed, None);
        // Expired and removed everywhere: pruned.
        store
            .record_activation(
                &act("a1", "g", "u1", 0, -100),
                &[removed(crm()), removed(hr())],
            )
            .await
            .unwrap();
        // Expired, still to be removed from hr: kept.
        store
            .record_activation(
                &act("a2", "g", "u2", 0, -100),
                &[removed(crm()), (hr(), PushState::Pushed, None)],
            )
            .await
            .unwrap();
        // Removed everywhere but expiring after `before`: kept.
        store
            .record_activation(&act("a3", "g", "u3", 0, -10), &[removed(crm())])
            .await
            .unwrap();
        let before = t0() - TimeDelta::seconds(50);
        assert_eq!(store.prune_activations(before).await.unwrap(), 1);
        let count = |sql: &'static str| store.count(sql);
        assert_eq!(
            count("SELECT COUNT(*) FROM activations WHERE id = 'a1'").await,
            0
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM activation_apps WHERE activation_id = 'a1'").await,
            0,
            "with its app rows"
        );
        assert_eq!(count("SELECT COUNT(*) FROM activations").await, 2);
        assert_eq!(count("SELECT COUNT(*) FROM activation_apps").await, 3);
        assert_eq!(store.prune_activations(before).await.unwrap(), 0);
        // Once hr confirms, a2 goes too; a3 once `before` passes it.
        store
            .set_push_state("a2", &hr(), PushState::Removed, None, None)
            .await
            .unwrap();
        assert_eq!(store.prune_activations(t0()).await.unwrap(), 2);
        assert_eq!(count("SELECT COUNT(*) FROM activation_apps").await, 0);
    }

    async fn has_member_reads_confirmed_memberships(db: &TestDb) {
        let store = db.open().await;
        let user = ObservedUser {
            scim_id: ScimId::from("s1"),
            origin: Origin::Created,
            attrs: attrs_from_json(serde_json::json!({"userName": "a@x"})).into(),
        };
        store
            .commit(
                &crm(),
                &[
                    Change::PutUser("u1".into(), user),
                    Change::PutGroup("g1".into(), "sg".into(), Origin::Created, "G".into()),
                    Change::AddMembers("g1".into(), vec!["u1".into()]),
                ],
                Utc::now(),
            )
            .await
            .unwrap();
        let (g1, u1) = (SourceId::from("g1"), SourceId::from("u1"));
        assert!(store.has_member(&crm(), &g1, &u1).await.unwrap());
        assert!(!store.has_member(&hr(), &g1, &u1).await.unwrap());
        assert!(!store.has_member(&crm(), &g1, &"u2".into()).await.unwrap());
        assert!(!store.has_member(&crm(), &"g2".into(), &u1).await.unwrap());
        store
            .commit(
                &crm(),
                &[Change::RemoveMembers("g1".into(), vec!["u1".into()])],
                Utc::now(),
            )
            .await
            .unwrap();
        assert!(!store.has_member(&crm(), &g1, &u1).await.unwrap());
    }

    async fn pending_becomes_deferred_in_one_app_only(db: &TestDb) {
        let store = db.open().await;
        store
            .record_activation(
                &act("a1", "g1", "u1", 0, 60),
                &[
                    (crm(), PushState::Pending, None),
                    (hr(), PushState::Pending, None),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .pending_to_deferred_in(&crm(), "taken over")
                .await
                .unwrap(),
            1
        );
        let now = t0();
        let crm_deferred = store.deferred_activations(&crm(), now).await.unwrap();
        assert_eq!(crm_deferred.len(), 1);
        assert!(
            store
                .deferred_activations(&hr(), now)
                .await
                .unwrap()
                .is_empty(),
            "hr is another replica's"
        );
    }

    async fn pushes_between_counts_sent_and_confirmed_pushes_of_one_app_in_the_window(db: &TestDb) {
        let store = db.open().await;
        let before = Utc::now() - chrono::Duration::milliseconds(5);
        for (id, user, state) in [
            ("a1", "u1", PushState::Pushed),
            ("a2", "u2", PushState::Pending),
            ("a3", "u3", PushState::Deferred),
            ("a4", "u4", PushState::Forwarded),
        ] {
            store
                .record_activation(
                    &act(id, "g1", user, 0, 60),
                    &[(crm(), state, None), (hr(), PushState::Pushed, None)],
                )
                .await
                .unwrap();
        }
        let after = Utc::now() + chrono::Duration::milliseconds(5);
        let window = chrono::Duration::seconds(10);
        assert_eq!(
            store.pushes_between(&crm(), before, after).await.unwrap(),
            2,
            "pushed and pending count; deferred and forwarded do not"
        );
        assert_eq!(store.pushes_between(&hr(), before, after).await.unwrap(), 4);
        assert_eq!(
            store
                .pushes_between(&crm(), before - window, before)
                .await
                .unwrap(),
            0,
            "before the window"
        );
        assert_eq!(
            store
                .pushes_between(&crm(), after, after + window)
                .await
                .unwrap(),
            0,
            "after the lease was taken: this process's own"
        );
    }

    async fn same_millisecond_activations_list_in_the_order_recorded(db: &TestDb) {
        let store = db.open().await;
        for id in ["c", "a", "b"] {
            store
                .record_activation(
                    &act(id, "g1", &format!("u-{id}"), 0, 60),
                    &[(crm(), PushState::Deferred, None)],
                )
                .await
                .unwrap();
        }
        let ids: Vec<String> = store
            .deferred_activations(&crm(), t0())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.activation.id)
            .collect();
        assert_eq!(
            ids,
            ["c", "a", "b"],
            "received in the same millisecond: recorded order"
        );
    }

    async fn ending_one_origin_leaves_the_others_live(db: &TestDb) {
        let store = db.open().await;
        let mut pim = act("a1", "g1", "u1", 0, 600);
        pim.origin = "pim-poll".into();
        let mut pushed = act("a2", "g1", "u1", 1, 600);
        pushed.origin = "push-group".into();
        for a in [&pim, &pushed] {
            store
                .record_activation(a, &[(crm(), PushState::Pushed, None)])
                .await
                .unwrap();
        }
        let now = t0() + chrono::Duration::seconds(10);
        let ended = store
            .end_activations_from(&"g1".into(), &"u1".into(), Some("push-group"), now)
            .await
            .unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].id, "a2");
        let live = store.live_activations(&crm(), now).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(
            live[0].activation.id, "a1",
            "the PIM activation is untouched"
        );
    }

    async fn audit_fields_round_trip(db: &TestDb) {
        let store = db.open().await;
        let mut a = act("a1", "g1", "u1", 0, 60);
        a.justification = Some("INC-4711: restore the billing database ✓".into());
        a.ticket_number = Some("INC-4711".into());
        a.ticket_system = Some("ServiceNow".into());
        store
            .record_activation(&a, &[(crm(), PushState::Pushed, None)])
            .await
            .unwrap();
        let plain = act("a2", "g1", "u2", 1, 60);
        store
            .record_activation(&plain, &[(crm(), PushState::Pushed, None)])
            .await
            .unwrap();
        let live = store.live_activations(&crm(), t0()).await.unwrap();
        assert_eq!(live[0].activation, a, "read back exactly");
        assert_eq!(live[1].activation, plain);
        let json = serde_json::to_value(&live[0]).unwrap();
        assert_eq!(json["ticket_number"], "INC-4711");
        assert_eq!(json["ticket_system"], "ServiceNow");
        let json = serde_json::to_value(&live[1]).unwrap();
        assert!(
            json.get("justification").is_none(),
            "skipped when absent: {json}"
        );
        let ended = store
            .end_activations(&"g1".into(), &"u1".into(), t0())
            .await
            .unwrap();
        assert_eq!(ended[0].justification, a.justification);
        assert_eq!(ended[0].ticket_system, a.ticket_system);
    }

    async fn live_activation_of_finds_the_latest_unexpired_one(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        let (g1, u1) = (SourceId::from("g1"), SourceId::from("u1"));
        assert!(
            store
                .live_activation_of(&g1, &u1, now)
                .await
                .unwrap()
                .is_empty()
        );
        for (a, apps) in [
            (
                act("a1", "g1", "u1", -20, 60),
                vec![
                    (hr(), PushState::Pushed, None),
                    (crm(), PushState::Deferred, Some("limited".to_owned())),
                ],
            ),
            (
                act("a2", "g1", "u1", -10, 120),
                vec![(crm(), PushState::Applied, None)],
            ),
            (
                act("a3", "g1", "u1", -100, -1),
                vec![(crm(), PushState::Pushed, None)],
            ),
            (
                act("a4", "g1", "u2", -5, 600),
                vec![(crm(), PushState::Pushed, None)],
            ),
            (
                act("a5", "g2", "u1", -5, 600),
                vec![(crm(), PushState::Pushed, None)],
            ),
        ] {
            store.record_activation(&a, &apps).await.unwrap();
        }
        let live = store.live_activation_of(&g1, &u1, now).await.unwrap();
        assert_eq!(ids(&live), [pair("a2", "crm")], "the one that ends last");
        assert_eq!(live[0].state, PushState::Applied);
        let later = now + TimeDelta::seconds(90);
        let live = store.live_activation_of(&g1, &u1, later).await.unwrap();
        assert_eq!(ids(&live), [pair("a2", "crm")]);
        let live = store
            .live_activation_of(&g1, &u1, now - TimeDelta::seconds(15))
            .await
            .unwrap();
        assert_eq!(ids(&live), [pair("a2", "crm")]);
        store.end_activations(&g1, &u1, now).await.unwrap();
        assert!(
            store
                .live_activation_of(&g1, &u1, now)
                .await
                .unwrap()
                .is_empty(),
            "ended ones are not live"
        );
        // Every app row of the activation, in app order.
        store
            .record_activation(
                &act("a6", "g3", "u1", 0, 60),
                &[
                    (hr(), PushState::Pushed, None),
                    (crm(), PushState::Deferred, Some("limited".into())),
                ],
            )
            .await
            .unwrap();
        let live = store
            .live_activation_of(&"g3".into(), &u1, now)
            .await
            .unwrap();
        assert_eq!(ids(&live), [pair("a6", "crm"), pair("a6", "hr")]);
        assert_eq!(live[0].detail.as_deref(), Some("limited"));
    }

    async fn extend_activation_keeps_the_later_expiry(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        let (g1, u1) = (SourceId::from("g1"), SourceId::from("u1"));
        store
            .record_activation(
                &act("a1", "g1", "u1", 0, 60),
                &[(crm(), PushState::Pushed, None)],
            )
            .await
            .unwrap();
        let expiry = |s| now + TimeDelta::seconds(s);
        assert_eq!(
            store
                .extend_activation("a1", expiry(120), now)
                .await
                .unwrap(),
            Some(expiry(120))
        );
        assert_eq!(
            store.activation_expiry("a1").await.unwrap(),
            Some(expiry(120))
        );
        assert_eq!(
            store
                .extend_activation("a1", expiry(90), now)
                .await
                .unwrap(),
            Some(expiry(120)),
            "an earlier expiry never shortens it"
        );
        assert_eq!(
            store.activation_expiry("a1").await.unwrap(),
            Some(expiry(120))
        );
        // The millisecond column moved with it: live at 100 s, not at 120 s.
        assert_eq!(
            ids(&store.live_activations(&crm(), expiry(100)).await.unwrap()),
            [pair("a1", "crm")]
        );
        assert!(
            store
                .live_activations(&crm(), expiry(120))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .other_live_activation(&g1, &u1, "x", expiry(100))
                .await
                .unwrap()
        );
        // Expired or unknown: nothing changes, nothing revives.
        assert_eq!(
            store
                .extend_activation("a1", expiry(600), expiry(120))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.activation_expiry("a1").await.unwrap(),
            Some(expiry(120))
        );
        assert_eq!(
            store
                .extend_activation("nope", expiry(600), now)
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.activation_expiry("nope").await.unwrap(), None);
    }

    async fn racing_extensions_end_with_the_latest(db: &TestDb) {
        let store = db.open().await;
        let now = t0();
        store
            .record_activation(
                &act("a1", "g1", "u1", 0, 60),
                &[(crm(), PushState::Pushed, None)],
            )
            .await
            .unwrap();
        let asks: Vec<i64> = (61..=80).rev().collect();
        let results = futures::future::join_all(
            asks.iter()
                .map(|s| store.extend_activation("a1", now + TimeDelta::seconds(*s), now)),
        )
        .await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(Option::is_some))
        );
        assert_eq!(
            store.activation_expiry("a1").await.unwrap(),
            Some(now + TimeDelta::seconds(80))
        );
    }

    backend_tests!(
        audit_fields_round_trip,
        live_activation_of_finds_the_latest_unexpired_one,
        extend_activation_keeps_the_later_expiry,
        racing_extensions_end_with_the_latest,
        pending_becomes_deferred_in_one_app_only,
        listings_filter_on_app_state_and_expiry,
        record_is_one_transaction,
        push_state_transitions,
        pending_becomes_deferred,
        other_live_activation_backs_the_pair,
        end_activations_shortens_only_live_ones_of_the_pair,
        prune_forgets_only_fully_removed_and_old,
        has_member_reads_confirmed_memberships,
        pushes_between_counts_sent_and_confirmed_pushes_of_one_app_in_the_window,
        same_millisecond_activations_list_in_the_order_recorded,
        ending_one_origin_leaves_the_others_live,
    );
}
