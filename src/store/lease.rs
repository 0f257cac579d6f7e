//! Per-app leases (SPEC §6.2): one writer per app across processes.
//!
//! A process writes to an app only while it holds the app's lease: a row naming the holder and
//! when the lease ends. The holder renews it before it ends; anyone may take it once it has
//! ended (a holder that died frees the app after one lease period). Taking and renewing is one
//! conditional upsert, so two processes on one database never both hold an app: on SQLite it
//! takes the database's write lock; on PostgreSQL (READ COMMITTED) `INSERT … ON CONFLICT DO
//! UPDATE … WHERE` locks the conflicting row and evaluates the `WHERE` on its newest
//! committed version, also when a racing transaction inserted it first, and keeps it locked
//! even when the `WHERE` is false, so the read that follows a refusal in the same
//! transaction sees the row the refusal was decided on.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Error, Store, db};
use crate::model::AppName;

/// Who holds an app's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's id (unique per process).
    pub holder: String,
    /// Free text for humans: command, host, pid.
    pub info: String,
    /// When the lease ends unless renewed (millisecond precision).
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Takes or renews `app`'s lease for `holder` until `now + ttl`, with `info`.
    ///
    /// `Ok(None)`: `holder` holds the lease now. `Ok(Some(other))`: someone else holds a lease
    /// unexpired at `now`, and nothing changed. A lease ending exactly at `now` has ended.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn try_lease(
        &self,
        app: &AppName,
        holder: &str,
        info: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaseHolder>, Error> {
        let now_ms = now.timestamp_millis();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let until_ms = now_ms
            .saturating_add(ttl_ms)
            .min(DateTime::<Utc>::MAX_UTC.timestamp_millis());
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(db("begin"))?;
            let taken = sqlx::query(
                "INSERT INTO leases (app, holder, info, expires_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (app) DO UPDATE SET holder = excluded.holder, info = excluded.info,
                   expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= $5",
            )
            .bind(app.as_str())
            .bind(holder)
            .bind(info)
            .bind(until_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(db("take lease"))?
            .rows_affected();
            let other = if taken == 1 {
                None
            } else {
                let row: Option<(String, String, i64)> =
                    sqlx::query_as("SELECT holder, info, expires_ms FROM leases WHERE app = $1")
                        .bind(app.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("read lease"))?;
                row.map(|(h, i, e)| lease_holder(app, h, i, e))
                    .transpose()?
            };
            tx.commit().await.map_err(db("commit"))?;
            Ok(other)
        })
    }

    /// Gives up `app`'s lease if `holder` holds it (expired or not); otherwise changes nothing.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn release_lease(&self, app: &AppName, holder: &str) -> Result<(), Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM leases WHERE app = $1 AND holder = $2")
                .bind(app.as_str())
                .bind(holder)
                .execute(p)
                .await
                .map(|_| ())
        })
        .map_err(db("release lease"))?;
        Ok(())
    }

    /// Who holds `app`'s lease unexpired at `now`, if anyone (for status and `sync-now`).
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn lease_holder(
        &self,
        app: &AppName,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaseHolder>, Error> {
        let row: Option<(String, String, i64)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT holder, info, expires_ms FROM leases WHERE app = $1 AND expires_ms > $2",
            )
            .bind(app.as_str())
            .bind(now.timestamp_millis())
            .fetch_optional(p)
            .await
        })
        .map_err(db("read lease"))?;
        row.map(|(h, i, e)| lease_holder(app, h, i, e)).transpose()
    }
}

/// A stored lease row.
fn lease_holder(
    app: &AppName,
    holder: String,
    info: String,
    expires_ms: i64,
) -> Result<LeaseHolder, Error> {
    let expires_at = DateTime::from_timestamp_millis(expires_ms).ok_or_else(|| Error::Corrupt {
        app: app.to_string(),
        what: "lease expiry",
        detail: expires_ms.to_string(),
    })?;
    Ok(LeaseHolder {
        holder,
        info,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::store::testing::TestDb;

    const TTL: Duration = Duration::from_secs(30);

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    async fn acquire_renew_refuse_take_over_release(db: &TestDb) {
        let store = db.open().await;
        let app = AppName::from("crm");
        assert_eq!(store.lease_holder(&app, at(0)).await.unwrap(), None);

        assert_eq!(
            store.try_lease(&app, "A", "run", TTL, at(0)).await.unwrap(),
            None
        );
        let held = LeaseHolder {
            holder: "A".into(),
            info: "run".into(),
            expires_at: at(30),
        };
        assert_eq!(
            store.lease_holder(&app, at(0)).await.unwrap(),
            Some(held.clone())
        );

        // Another holder is refused and told who holds it; nothing changes.
        assert_eq!(
            store
                .try_lease(&app, "B", "sync-now", TTL, at(10))
                .await
                .unwrap(),
            Some(held.clone())
        );
        assert_eq!(
            store.lease_holder(&app, at(10)).await.unwrap(),
            Some(held.clone())
        );

        // The holder renews.
        assert_eq!(
            store
                .try_lease(&app, "A", "run", TTL, at(20))
                .await
                .unwrap(),
            None
        );
        let renewed = LeaseHolder {
            expires_at: at(50),
            ..held
        };
        assert_eq!(
            store.lease_holder(&app, at(40)).await.unwrap(),
            Some(renewed.clone()),
            "still held after the first term"
        );
        assert_eq!(
            store
                .try_lease(&app, "B", "sync-now", TTL, at(49))
                .await
                .unwrap(),
            Some(renewed)
        );

        // Other apps are independent.
        assert_eq!(
            store
                .try_lease(&AppName::from("hr"), "B", "sync-now", TTL, at(49))
                .await
                .unwrap(),
            None
        );

        // Expired (exactly at its end): anyone takes it over.
        assert_eq!(store.lease_holder(&app, at(50)).await.unwrap(), None);
        assert_eq!(
            store
                .try_lease(&app, "B", "sync-now", TTL, at(50))
                .await
                .unwrap(),
            None
        );
        let b = store.lease_holder(&app, at(50)).await.unwrap().unwrap();
        assert_eq!((b.holder.as_str(), b.info.as_str()), ("B", "sync-now"));
        assert_eq!(b.expires_at, at(80));
        assert_eq!(
            store
                .try_lease(&app, "A", "run", TTL, at(51))
                .await
                .unwrap()
                .map(|h| h.holder),
            Some("B".into())
        );

        // Only the holder releases.
        store.release_lease(&app, "A").await.unwrap();
        assert_eq!(
            store
                .lease_holder(&app, at(51))
                .await
                .unwrap()
                .map(|h| h.holder),
            Some("B".into())
        );
        store.release_lease(&app, "B").await.unwrap();
        assert_eq!(store.lease_holder(&app, at(51)).await.unwrap(), None);
        assert_eq!(
            store
                .try_lease(&app, "A", "run", TTL, at(52))
                .await
                .unwrap(),
            None
        );
    }

    async fn huge_ttl_saturates(db: &TestDb) {
        let store = db.open().await;
        let app = AppName::from("crm");
        assert_eq!(
            store
                .try_lease(&app, "A", "", Duration::MAX, at(0))
                .await
                .unwrap(),
            None
        );
        let h = store.lease_holder(&app, at(0)).await.unwrap().unwrap();
        assert!(h.expires_at > at(1_000_000_000));
    }

    async fn two_handles_on_one_database_never_both_hold(db: &TestDb) {
        let one = db.open().await;
        let two = db.open().await;
        let app = AppName::from("crm");

        assert_eq!(
            one.try_lease(&app, "A", "run", TTL, at(0)).await.unwrap(),
            None
        );
        let other = two
            .try_lease(&app, "B", "sync-now", TTL, at(1))
            .await
            .unwrap();
        assert_eq!(other.map(|h| h.holder), Some("A".into()));
        assert_eq!(
            two.lease_holder(&app, at(1))
                .await
                .unwrap()
                .map(|h| h.holder),
            Some("A".into())
        );
        one.release_lease(&app, "A").await.unwrap();
        assert_eq!(
            two.try_lease(&app, "B", "sync-now", TTL, at(2))
                .await
                .unwrap(),
            None
        );

        // Racing: per app, several holders on both handles at once; exactly one wins.
        for round in 0..20 {
            let app = AppName::new(format!("race-{round}"));
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let store = if i % 2 == 0 { one.clone() } else { two.clone() };
                    let app = app.clone();
                    tokio::spawn(async move {
                        let me = format!("h{i}");
                        let got = store
                            .try_lease(&app, &me, "race", TTL, at(0))
                            .await
                            .unwrap();
                        (me, got)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            let mut told = Vec::new();
            for t in tasks {
                let (me, got) = t.await.unwrap();
                match got {
                    None => winners.push(me),
                    Some(h) => told.push(h.holder),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert!(
                told.iter().all(|h| *h == winners[0]),
                "round {round}: {told:?}"
            );
        }
    }

    backend_tests!(
        acquire_renew_refuse_take_over_release,
        huge_ttl_saturates,
        two_handles_on_one_database_never_both_hold,
    );
}
