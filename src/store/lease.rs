//! Per-app leases (SPEC §6.2, §7.1): one writer per app across processes and replicas.
//!
//! A process writes to an app only while it holds the app's lease: a row naming the holder and
//! when the lease ends. The holder renews it before it ends; anyone may take it once it has
//! ended (a holder that died frees the app after one lease period), or at once when the
//! caller knows the holder is dead ([`Store::take_over_lease`]). Taking and renewing is one
//! conditional upsert, so two processes on one database never both hold an app.
//!
//! **Fencing.** Each lease row carries a `generation` that increases every time the lease
//! changes holder (not when the same holder renews it, even after it lapsed, and never back:
//! releasing keeps the row). A holder learns its generation when it takes or renews the lease
//! ([`LeaseGrant::Held`]) and checks [`Store::holds_lease`] before each write phase: once
//! another process took the app over, the check fails and the old holder writes no more.
//!
//! **Concurrency.** On SQLite the upsert takes the database's write lock. On PostgreSQL
//! (READ COMMITTED) `INSERT … ON CONFLICT DO UPDATE … WHERE` locks the conflicting row and
//! evaluates the `WHERE` on its newest committed version, also when a racing transaction
//! inserted it first, and keeps it locked even when the `WHERE` is false, so the read that
//! follows a refusal in the same transaction sees the row the refusal was decided on.
//! SERIALIZABLE would add only retries: every decision is one statement on one row.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Error, Store, db};
use crate::model::AppName;

/// Who holds an app's lease (the first form of [`Lease`], kept for [`Store::try_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's id (unique per process).
    pub holder: String,
    /// Free text for humans: command, host, pid.
    pub info: String,
    /// When the lease ends unless renewed (millisecond precision).
    pub expires_at: DateTime<Utc>,
}

/// Who asks for a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseClaim<'a> {
    /// The holder's id, unique per process (and per replica).
    pub holder: &'a str,
    /// Free text for humans, kept with the lease (e.g. JSON of the command and its address).
    pub info: &'a str,
    /// The holding process's id.
    pub pid: u32,
    /// The holding process's host name.
    pub host: &'a str,
}

/// An app's lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The holder's id.
    pub holder: String,
    /// The holder's free text.
    pub info: String,
    /// The holding process's id (0 for a lease taken before the store recorded it).
    pub pid: u32,
    /// The holding process's host ("" for a lease taken before the store recorded it).
    pub host: String,
    /// When this holder took the lease (renewals keep it; millisecond precision).
    pub since: DateTime<Utc>,
    /// When the lease ends unless renewed (millisecond precision).
    pub until: DateTime<Utc>,
    /// Fencing token: increases every time the lease changes holder.
    pub generation: i64,
}

/// The answer to taking a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The claimant holds the lease now, with this generation, until `until`.
    Held(Lease),
    /// Another holder has a lease unexpired at the time asked; nothing changed.
    HeldByOther(Lease),
}

/// A lease row: `holder, info, pid, host, since_ms, expires_ms, generation`.
type LeaseRow = (String, String, i64, String, i64, i64, i64);

impl Store {
    /// Takes or renews `app`'s lease for `claim.holder` until `now + ttl`.
    ///
    /// Held: the lease is the claimant's (taken if it had ended, exactly at `now` included, or
    /// was the claimant's already; the generation increases when the holder changes).
    /// HeldByOther: someone else holds a lease unexpired at `now`, and nothing changed.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn take_lease(
        &self,
        app: &AppName,
        claim: &LeaseClaim<'_>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseGrant, Error> {
        let now_ms = now.timestamp_millis();
        let until_ms = until_ms(now_ms, ttl);
        // `leases.*` in `SET` is the row before the update, on both backends. A lease read
        // as unexpired (`expires_ms > now`) by the same holder keeps its `since`.
        let rows: (Option<LeaseRow>, Option<LeaseRow>) = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(db("begin"))?;
            let taken: Option<LeaseRow> = sqlx::query_as(
                "INSERT INTO leases (app, holder, info, pid, host, since_ms, expires_ms, generation)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
                 ON CONFLICT (app) DO UPDATE SET
                   generation = CASE WHEN leases.holder = excluded.holder
                     THEN leases.generation ELSE leases.generation + 1 END,
                   since_ms = CASE WHEN leases.holder = excluded.holder AND leases.expires_ms > $6
                     THEN leases.since_ms ELSE excluded.since_ms END,
                   holder = excluded.holder, info = excluded.info, pid = excluded.pid,
                   host = excluded.host, expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= $6
                 RETURNING holder, info, pid, host, since_ms, expires_ms, generation",
            )
            .bind(app.as_str())
            .bind(claim.holder)
            .bind(claim.info)
            .bind(i64::from(claim.pid))
            .bind(claim.host)
            .bind(now_ms)
            .bind(until_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("take lease"))?;
            let other: Option<LeaseRow> = if taken.is_some() {
                None
            } else {
                sqlx::query_as(
                    "SELECT holder, info, pid, host, since_ms, expires_ms, generation
                     FROM leases WHERE app = $1",
                )
                .bind(app.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("read lease"))?
            };
            tx.commit().await.map_err(db("commit"))?;
            Ok::<_, Error>((taken, other))
        })?;
        match rows {
            (Some(taken), _) => Ok(LeaseGrant::Held(lease_row(app, taken)?)),
            (None, Some(other)) => Ok(LeaseGrant::HeldByOther(lease_row(app, other)?)),
            // The conflicting row is locked by our statement until commit: it cannot go.
            (None, None) => Err(Error::Corrupt {
                app: app.to_string(),
                what: "lease",
                detail: "the lease row vanished while it was being taken".into(),
            }),
        }
    }

    /// Takes `app`'s lease from `from`, a holder the caller knows to be dead (on this host,
    /// its process gone: SPEC §7.1), without waiting for it to lapse: only if the lease is
    /// still `from.holder`'s at `from.generation` and was not renewed since `from` was read
    /// (same `until`), so that a holder that was alive after all keeps it, and of several
    /// replicas seeing the same dead holder exactly one takes over. The generation increases.
    ///
    /// `Ok(None)`: the lease changed since `from` was read (renewed, released or taken);
    /// nothing changed, and [`Store::take_lease`] tells who holds it now.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn take_over_lease(
        &self,
        app: &AppName,
        claim: &LeaseClaim<'_>,
        from: &Lease,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, Error> {
        let now_ms = now.timestamp_millis();
        let row: Option<LeaseRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "UPDATE leases SET holder = $2, info = $3, pid = $4, host = $5, since_ms = $6,
                   expires_ms = $7, generation = generation + 1
                 WHERE app = $1 AND holder = $8 AND generation = $9 AND expires_ms = $10
                 RETURNING holder, info, pid, host, since_ms, expires_ms, generation",
            )
            .bind(app.as_str())
            .bind(claim.holder)
            .bind(claim.info)
            .bind(i64::from(claim.pid))
            .bind(claim.host)
            .bind(now_ms)
            .bind(until_ms(now_ms, ttl))
            .bind(&from.holder)
            .bind(from.generation)
            .bind(from.until.timestamp_millis())
            .fetch_optional(p)
            .await
        })
        .map_err(db("take over lease"))?;
        row.map(|r| lease_row(app, r)).transpose()
    }

    /// Whether `holder` holds `app`'s lease at `generation`, unexpired at `now`: the fencing
    /// check before each write phase and push. One primary-key lookup.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn holds_lease(
        &self,
        app: &AppName,
        holder: &str,
        generation: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM leases
                   WHERE app = $1 AND holder = $2 AND generation = $3 AND expires_ms > $4)",
            )
            .bind(app.as_str())
            .bind(holder)
            .bind(generation)
            .bind(now.timestamp_millis())
            .fetch_one(p)
            .await
        })
        .map_err(db("check lease"))
    }

    /// `app`'s lease if it is unexpired at `now` (for status: who, pid, host, since, until).
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn lease(&self, app: &AppName, now: DateTime<Utc>) -> Result<Option<Lease>, Error> {
        let row: Option<LeaseRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT holder, info, pid, host, since_ms, expires_ms, generation FROM leases
                 WHERE app = $1 AND expires_ms > $2",
            )
            .bind(app.as_str())
            .bind(now.timestamp_millis())
            .fetch_optional(p)
            .await
        })
        .map_err(db("read lease"))?;
        row.map(|r| lease_row(app, r)).transpose()
    }

    /// Takes or renews `app`'s lease for `holder` (this process: its pid and [`this_host`]
    /// are recorded) until `now + ttl`, with `info`. [`Store::take_lease`] also tells the
    /// generation.
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
        let host = this_host();
        let claim = LeaseClaim {
            holder,
            info,
            pid: std::process::id(),
            host: &host,
        };
        Ok(match self.take_lease(app, &claim, ttl, now).await? {
            LeaseGrant::Held(_) => None,
            LeaseGrant::HeldByOther(other) => Some(other.into()),
        })
    }

    /// Gives up `app`'s lease if `holder` holds it (expired or not); otherwise changes nothing.
    /// The row stays, ended, so that the generation never goes back.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn release_lease(&self, app: &AppName, holder: &str) -> Result<(), Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE leases SET expires_ms = 0 WHERE app = $1 AND holder = $2")
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
        Ok(self.lease(app, now).await?.map(LeaseHolder::from))
    }
}

impl From<Lease> for LeaseHolder {
    fn from(l: Lease) -> Self {
        LeaseHolder {
            holder: l.holder,
            info: l.info,
            expires_at: l.until,
        }
    }
}

/// This machine's host name, as recorded with the leases of this process: `/etc/hostname`,
/// else `$HOSTNAME`, else `localhost` (read once).
pub fn this_host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into())
    })
    .clone()
}

/// `now + ttl` in unix ms, saturated to the latest instant chrono represents.
fn until_ms(now_ms: i64, ttl: Duration) -> i64 {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    now_ms
        .saturating_add(ttl_ms)
        .min(DateTime::<Utc>::MAX_UTC.timestamp_millis())
}

/// A stored lease row.
fn lease_row(app: &AppName, row: LeaseRow) -> Result<Lease, Error> {
    let (holder, info, pid, host, since_ms, expires_ms, generation) = row;
    let corrupt = |what: &'static str, detail: String| Error::Corrupt {
        app: app.to_string(),
        what,
        detail,
    };
    let instant = |what: &'static str, ms: i64| {
        DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(what, ms.to_string()))
    };
    Ok(Lease {
        holder,
        info,
        pid: u32::try_from(pid).map_err(|_| corrupt("lease pid", pid.to_string()))?,
        host,
        since: instant("lease start", since_ms)?,
        until: instant("lease expiry", expires_ms)?,
        generation,
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
            let first = one.lease(&app, at(0)).await.unwrap().unwrap();
            assert_eq!((&first.holder, first.generation), (&winners[0], 1));

            // Once it lapsed, the others race for it through `take_lease`: again exactly one
            // wins, and the change of holder raises the generation, seen from both handles.
            let tasks: Vec<_> = (0..8)
                .filter(|i| format!("h{i}") != first.holder)
                .map(|i| {
                    let store = if i % 2 == 0 { two.clone() } else { one.clone() };
                    let app = app.clone();
                    tokio::spawn(async move {
                        let me = format!("h{i}");
                        let c = LeaseClaim {
                            holder: &me,
                            info: "race",
                            pid: 1,
                            host: "h",
                        };
                        let got = store.take_lease(&app, &c, TTL, at(30)).await.unwrap();
                        (me, got)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    (me, LeaseGrant::Held(l)) => winners.push((me, l.generation)),
                    (_, LeaseGrant::HeldByOther(l)) => assert_eq!(l.generation, 2),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(winners[0].1, 2, "round {round}");
            for store in [&one, &two] {
                let now = store.lease(&app, at(31)).await.unwrap().unwrap();
                assert_eq!((&now.holder, now.generation), (&winners[0].0, 2));
                assert!(
                    !store
                        .holds_lease(&app, &first.holder, 1, at(31))
                        .await
                        .unwrap()
                );
            }
        }
    }

    fn claim(holder: &str) -> LeaseClaim<'_> {
        LeaseClaim {
            holder,
            info: "{\"kind\":\"run\"}",
            pid: 4242,
            host: "node-1",
        }
    }

    fn held(grant: LeaseGrant) -> Lease {
        match grant {
            LeaseGrant::Held(l) => l,
            LeaseGrant::HeldByOther(l) => panic!("held by {}", l.holder),
        }
    }

    async fn generation_rises_only_on_a_change_of_holder(db: &TestDb) {
        let one = db.open().await;
        let two = db.open().await;
        let app = AppName::from("crm");
        assert_eq!(one.lease(&app, at(0)).await.unwrap(), None);

        let a = held(one.take_lease(&app, &claim("A"), TTL, at(0)).await.unwrap());
        assert_eq!(
            a,
            Lease {
                holder: "A".into(),
                info: "{\"kind\":\"run\"}".into(),
                pid: 4242,
                host: "node-1".into(),
                since: at(0),
                until: at(30),
                generation: 1,
            }
        );
        assert_eq!(two.lease(&app, at(1)).await.unwrap(), Some(a.clone()));
        assert!(one.holds_lease(&app, "A", 1, at(29)).await.unwrap());
        assert!(
            !one.holds_lease(&app, "A", 1, at(30)).await.unwrap(),
            "lapsed"
        );
        assert!(!one.holds_lease(&app, "A", 2, at(1)).await.unwrap());
        assert!(!one.holds_lease(&app, "B", 1, at(1)).await.unwrap());

        // Renewals keep the generation and the start, also after the lease lapsed.
        let renewed = held(
            one.take_lease(&app, &claim("A"), TTL, at(20))
                .await
                .unwrap(),
        );
        assert_eq!(
            (renewed.generation, renewed.since, renewed.until),
            (1, at(0), at(50))
        );
        let refused = two
            .take_lease(&app, &claim("B"), TTL, at(49))
            .await
            .unwrap();
        assert_eq!(refused, LeaseGrant::HeldByOther(renewed));
        let late = held(
            one.take_lease(&app, &claim("A"), TTL, at(60))
                .await
                .unwrap(),
        );
        assert_eq!(
            (late.generation, late.since),
            (1, at(60)),
            "lapsed: a new term"
        );

        // A change of holder raises it; the old holder's fencing check fails from then on.
        let b = held(
            two.take_lease(&app, &claim("B"), TTL, at(90))
                .await
                .unwrap(),
        );
        assert_eq!((b.generation, b.since, b.until), (2, at(90), at(120)));
        assert!(!one.holds_lease(&app, "A", 1, at(91)).await.unwrap());
        assert!(one.holds_lease(&app, "B", 2, at(91)).await.unwrap());
        assert_eq!(
            one.take_lease(&app, &claim("A"), TTL, at(91))
                .await
                .unwrap(),
            LeaseGrant::HeldByOther(b.clone())
        );

        // Releasing keeps the generation: the next holder's is higher still.
        two.release_lease(&app, "B").await.unwrap();
        assert_eq!(one.lease(&app, at(92)).await.unwrap(), None);
        assert!(!two.holds_lease(&app, "B", 2, at(92)).await.unwrap());
        let a = held(
            one.take_lease(&app, &claim("A"), TTL, at(93))
                .await
                .unwrap(),
        );
        assert_eq!(a.generation, 3);
        // Through the first API too.
        assert_eq!(
            two.try_lease(&app, "B", "", TTL, at(94))
                .await
                .unwrap()
                .map(|h| h.holder),
            Some("A".into())
        );
        assert_eq!(
            two.try_lease(&app, "B", "", TTL, at(123)).await.unwrap(),
            None
        );
        let b = two.lease(&app, at(123)).await.unwrap().unwrap();
        assert_eq!((b.generation, b.pid), (4, std::process::id()));
        assert_eq!(b.host, this_host());
    }

    async fn a_dead_holder_is_taken_over_once(db: &TestDb) {
        let one = db.open().await;
        let two = db.open().await;
        let app = AppName::from("crm");
        let dead = held(one.take_lease(&app, &claim("A"), TTL, at(0)).await.unwrap());

        // Several replicas see the same dead holder at once: exactly one takes over.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = if i % 2 == 0 { one.clone() } else { two.clone() };
                let (app, dead) = (app.clone(), dead.clone());
                tokio::spawn(async move {
                    let me = format!("r{i}");
                    let got = store
                        .take_over_lease(&app, &claim(&me), &dead, TTL, at(5))
                        .await
                        .unwrap();
                    (me, got)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            if let (me, Some(lease)) = t.await.unwrap() {
                assert_eq!(
                    (lease.generation, lease.since, lease.until),
                    (2, at(5), at(35))
                );
                winners.push(me);
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let now = one.lease(&app, at(6)).await.unwrap().unwrap();
        assert_eq!(
            (now.holder.as_str(), now.generation),
            (winners[0].as_str(), 2)
        );
        assert!(!one.holds_lease(&app, "A", 1, at(6)).await.unwrap());

        // A holder that renewed after it was read is alive: it keeps the lease.
        let alive = held(
            one.take_lease(&app, &claim("C"), TTL, at(40))
                .await
                .unwrap(),
        );
        held(
            one.take_lease(&app, &claim("C"), TTL, at(41))
                .await
                .unwrap(),
        );
        assert_eq!(
            two.take_over_lease(&app, &claim("D"), &alive, TTL, at(42))
                .await
                .unwrap(),
            None
        );
        assert_eq!(one.lease(&app, at(42)).await.unwrap().unwrap().holder, "C");
    }

    backend_tests!(
        acquire_renew_refuse_take_over_release,
        huge_ttl_saturates,
        two_handles_on_one_database_never_both_hold,
        generation_rises_only_on_a_change_of_holder,
        a_dead_holder_is_taken_over_once,
    );
}
