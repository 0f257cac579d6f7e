//! The state store: the memory of what each app holds, so that an unchanged directory costs no
//! SCIM request at all.
//!
//! It keeps, per app: source id ↔ SCIM id and origin for users and groups, the attributes last
//! confirmed, group memberships, learnt app facts (flags), failing objects and cycle reports;
//! and per source, what it needs to resume reading changes only ([`SourceState`]).
//! Only this module knows SQL. SQLite through sqlx runtime queries; the database file and its
//! folder are created on first use and the embedded migrations run at open.
//! Observed state is written only after the app confirmed the change ([`Store::commit`]).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::model::{
    AppName, AttrKey, Attrs, Observed, ObservedGroup, ObservedUser, Origin, ScimId, SourceId,
};
use crate::report::CycleReport;

mod activations;
mod lease;
mod source_state;

pub use activations::{Activation, AppActivation, PushState};
pub use lease::LeaseHolder;
pub use source_state::SourceState;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Cycle reports kept per app.
const REPORTS_KEPT: i64 = 200;

/// A store failure. Names the database and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `state` URL is not one this build can open.
    #[error(
        "service.state: {url:?} is not supported: use sqlite://PATH (for example sqlite://state/scim-sync.db)"
    )]
    Unsupported {
        /// The configured URL.
        url: String,
    },
    /// The database folder could not be created.
    #[error("cannot create the state folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A database operation failed.
    #[error("state store {what}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema migration failed.
    #[error("state store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("state store holds an unreadable {what} for app {app}: {detail}")]
    Corrupt {
        /// The app.
        app: String,
        /// The kind of value.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Db { what, source }
}

/// A confirmed change to record, produced by apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The app holds this user with these attributes.
    PutUser(SourceId, ObservedUser),
    /// The app confirmed these attributes for a user we already manage.
    SetUserAttrs(SourceId, Attrs),
    /// The app confirmed a new display name for a group we already manage.
    RenameGroup(SourceId, String),
    /// The user is gone from the app (deleted by us).
    DropUser(SourceId),
    /// The app holds this group (members are recorded separately).
    PutGroup(SourceId, ScimId, Origin, String),
    /// The group is no longer ours to manage (deleted or forgotten), with its memberships.
    DropGroup(SourceId),
    /// These users are now members of the group.
    AddMembers(SourceId, Vec<SourceId>),
    /// These users are no longer members of the group.
    RemoveMembers(SourceId, Vec<SourceId>),
    /// An operation on this object failed (kept until one succeeds).
    Failed {
        /// e.g. `user u-alice`.
        object: String,
        /// e.g. `create`.
        op: String,
        /// The error, as reported.
        error: String,
    },
    /// An operation on this object succeeded: clear its failure.
    Succeeded {
        /// e.g. `user u-alice`.
        object: String,
    },
}

/// An object whose last operation failed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailingObject {
    /// e.g. `user u-alice`.
    pub object: String,
    /// The operation.
    pub op: String,
    /// The last error.
    pub error: String,
    /// First failure (RFC 3339).
    pub since: String,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The state store. Cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the store at `url` (`sqlite://PATH` or `sqlite::memory:`).
    ///
    /// # Errors
    /// [`Error`] when the URL is unsupported, the folder cannot be created or the database
    /// cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Store, Error> {
        if url == "sqlite::memory:" {
            // One connection: every pooled in-memory connection would be its own database.
            let opts = SqliteConnectOptions::from_str(url).map_err(db("open"))?;
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .map_err(db("open"))?;
            MIGRATOR.run(&pool).await?;
            return Ok(Store { pool });
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Unsupported {
                url: url.to_owned(),
            })?;
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Folder {
                path: dir.to_owned(),
                source,
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(db("open"))?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Checks that the database answers (for `/readyz`).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db("ping"))?;
        Ok(())
    }

    /// Everything the store remembers of `app`.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn load_observed(&self, app: &AppName) -> Result<Observed, Error> {
        // Each batch of rows is turned into the model before the next is fetched, so that
        // raw rows of users and memberships are never all in memory at once.
        let mut observed = Observed::default();
        let rows =
            sqlx::query("SELECT source_id, scim_id, origin, attrs FROM scim_users WHERE app = $1")
                .bind(app.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db("load users"))?;
        read_users(app, rows, &mut observed)?;
        let rows = sqlx::query(
            "SELECT source_id, scim_id, origin, display_name FROM scim_groups WHERE app = $1",
        )
        .bind(app.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("load groups"))?;
        read_groups(app, rows, &mut observed)?;
        let rows = sqlx::query("SELECT group_id, user_id FROM scim_members WHERE app = $1")
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db("load members"))?;
        read_members(rows, &mut observed);
        Ok(observed)
    }

    /// What the store remembers of some objects of `app`: only `users` and `groups` (ids the
    /// store does not know are left out), each group's `members` limited to `users`.
    ///
    /// For a change that touches a few objects (an activation, its expiry): every lookup goes
    /// through the primary keys, so the cost follows the ids asked, not the size of the app.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn load_observed_scope(
        &self,
        app: &AppName,
        users: &[SourceId],
        groups: &[SourceId],
    ) -> Result<Observed, Error> {
        let user_ids = ids_json(users);
        let group_ids = ids_json(groups);
        let mut observed = Observed::default();
        let rows = sqlx::query(SCOPE_USERS)
            .bind(app.as_str())
            .bind(&user_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db("load users"))?;
        read_users(app, rows, &mut observed)?;
        let rows = sqlx::query(SCOPE_GROUPS)
            .bind(app.as_str())
            .bind(&group_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db("load groups"))?;
        read_groups(app, rows, &mut observed)?;
        let rows = sqlx::query(SCOPE_MEMBERS)
            .bind(app.as_str())
            .bind(&group_ids)
            .bind(&user_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db("load members"))?;
        read_members(rows, &mut observed);
        Ok(observed)
    }

    /// Records confirmed changes for `app` in one transaction.
    ///
    /// Changes of one kind go to the database as one statement over a JSON array, so a phase
    /// of 20k creates costs a handful of statements, not 20k round trips. They are applied in a
    /// fixed order (upserts, member adds, member removes, drops, then failure bookkeeping with
    /// failures last, so that any failure of an object in the batch wins).
    ///
    /// # Errors
    /// [`Error::Db`]; nothing is recorded then.
    pub async fn commit(
        &self,
        app: &AppName,
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut b = Batches::default();
        for change in changes {
            match change {
                Change::PutUser(id, u) => b.put_users.push(json!([
                    id.as_str(),
                    u.scim_id.as_str(),
                    u.origin.as_str(),
                    attrs_text(&u.attrs)
                ])),
                Change::SetUserAttrs(id, attrs) => {
                    b.set_attrs.push(json!([id.as_str(), attrs_text(attrs)]))
                }
                Change::PutGroup(id, scim_id, origin, name) => b.put_groups.push(json!([
                    id.as_str(),
                    scim_id.as_str(),
                    origin.as_str(),
                    name
                ])),
                Change::RenameGroup(id, name) => b.renames.push(json!([id.as_str(), name])),
                Change::AddMembers(g, users) => b
                    .add_members
                    .extend(users.iter().map(|u| json!([g.as_str(), u.as_str()]))),
                Change::RemoveMembers(g, users) => b
                    .remove_members
                    .extend(users.iter().map(|u| json!([g.as_str(), u.as_str()]))),
                Change::DropUser(id) => b.drop_users.push(json!(id.as_str())),
                Change::DropGroup(id) => b.drop_groups.push(json!(id.as_str())),
                Change::Failed { object, op, error } => b.failed.push(json!([object, op, error])),
                Change::Succeeded { object } => b.succeeded.push(json!(object)),
            }
        }
        let a = app.as_str();
        let now = now.to_rfc3339();
        let mut tx = self.pool.begin().await.map_err(db("begin"))?;
        // Each statement reads its rows from `$2`, a JSON array, with `json_each`.
        let statements: [(&'static str, &Vec<Value>, &'static str); 10] = [
            (
                "INSERT INTO scim_users (app, source_id, scim_id, origin, attrs)
                 SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($2) WHERE true
                 ON CONFLICT (app, source_id) DO UPDATE SET scim_id = excluded.scim_id, origin = excluded.origin, attrs = excluded.attrs",
                &b.put_users,
                "record users",
            ),
            (
                // An upsert driven by the batch (an index probe per row) that only ever meets
                // existing rows; `UPDATE … FROM json_each` made SQLite scan the whole table.
                "INSERT INTO scim_users (app, source_id, scim_id, origin, attrs)
                 SELECT $1, j.value ->> 0, '', '', j.value ->> 1 FROM json_each($2) AS j
                 WHERE EXISTS (SELECT 1 FROM scim_users u WHERE u.app = $1 AND u.source_id = j.value ->> 0)
                 ON CONFLICT (app, source_id) DO UPDATE SET attrs = excluded.attrs",
                &b.set_attrs,
                "update users",
            ),
            (
                "INSERT INTO scim_groups (app, source_id, scim_id, origin, display_name)
                 SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($2) WHERE true
                 ON CONFLICT (app, source_id) DO UPDATE SET scim_id = excluded.scim_id, origin = excluded.origin, display_name = excluded.display_name",
                &b.put_groups,
                "record groups",
            ),
            (
                "INSERT INTO scim_groups (app, source_id, scim_id, origin, display_name)
                 SELECT $1, j.value ->> 0, '', '', j.value ->> 1 FROM json_each($2) AS j
                 WHERE EXISTS (SELECT 1 FROM scim_groups g WHERE g.app = $1 AND g.source_id = j.value ->> 0)
                 ON CONFLICT (app, source_id) DO UPDATE SET display_name = excluded.display_name",
                &b.renames,
                "rename groups",
            ),
            (
                "INSERT OR IGNORE INTO scim_members (app, group_id, user_id)
                 SELECT $1, value ->> 0, value ->> 1 FROM json_each($2)",
                &b.add_members,
                "record members",
            ),
            (
                "DELETE FROM scim_members WHERE app = $1 AND (group_id, user_id) IN
                 (SELECT value ->> 0, value ->> 1 FROM json_each($2))",
                &b.remove_members,
                "drop members",
            ),
            (
                "DELETE FROM scim_members WHERE app = $1 AND user_id IN (SELECT value FROM json_each($2))",
                &b.drop_users,
                "drop user memberships",
            ),
            (
                "DELETE FROM scim_users WHERE app = $1 AND source_id IN (SELECT value FROM json_each($2))",
                &b.drop_users,
                "drop users",
            ),
            (
                "DELETE FROM scim_members WHERE app = $1 AND group_id IN (SELECT value FROM json_each($2))",
                &b.drop_groups,
                "drop group memberships",
            ),
            (
                "DELETE FROM scim_groups WHERE app = $1 AND source_id IN (SELECT value FROM json_each($2))",
                &b.drop_groups,
                "drop groups",
            ),
        ];
        for (sql, rows, what) in statements {
            if rows.is_empty() {
                continue;
            }
            sqlx::query(sql)
                .bind(a)
                .bind(Value::Array(rows.clone()).to_string())
                .execute(&mut *tx)
                .await
                .map_err(db(what))?;
        }
        if !b.succeeded.is_empty() {
            sqlx::query("DELETE FROM failures WHERE app = $1 AND object IN (SELECT value FROM json_each($2))")
                .bind(a)
                .bind(Value::Array(b.succeeded).to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("clear failures"))?;
        }
        // One row per failed operation, in order, so an object failing twice counts twice.
        for f in &b.failed {
            sqlx::query(
                "INSERT INTO failures (app, object, op, error, first_at, last_at, attempts)
                 VALUES ($1, $2 ->> 0, $2 ->> 1, $2 ->> 2, $3, $3, 1)
                 ON CONFLICT (app, object) DO UPDATE SET op = excluded.op, error = excluded.error,
                   last_at = excluded.last_at, attempts = failures.attempts + 1",
            )
            .bind(a)
            .bind(f.to_string())
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("record failure"))?;
        }
        tx.commit().await.map_err(db("commit"))
    }

    /// A learnt fact about `app` (e.g. `removal_form`).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn flag(&self, app: &AppName, key: &str) -> Result<Option<String>, Error> {
        sqlx::query_scalar("SELECT value FROM app_flags WHERE app = $1 AND key = $2")
            .bind(app.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read flag"))
    }

    /// Records a learnt fact about `app`.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn set_flag(&self, app: &AppName, key: &str, value: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO app_flags (app, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (app, key) DO UPDATE SET value = excluded.value",
        )
        .bind(app.as_str())
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db("write flag"))?;
        Ok(())
    }

    /// Saves a cycle report, keeping the newest ones per app.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn save_report(&self, report: &CycleReport) -> Result<(), Error> {
        let json = serde_json::to_string(report).unwrap_or_else(|_| "{}".into());
        sqlx::query("INSERT INTO cycle_reports (app, started_at, report) VALUES ($1, $2, $3)")
            .bind(&report.app)
            .bind(&report.started_at)
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(db("save report"))?;
        sqlx::query(
            "DELETE FROM cycle_reports WHERE app = $1 AND id NOT IN
             (SELECT id FROM cycle_reports WHERE app = $1 ORDER BY id DESC LIMIT $2)",
        )
        .bind(&report.app)
        .bind(REPORTS_KEPT)
        .execute(&self.pool)
        .await
        .map_err(db("trim reports"))?;
        Ok(())
    }

    /// The newest cycle report of `app`.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn last_report(&self, app: &AppName) -> Result<Option<CycleReport>, Error> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT report FROM cycle_reports WHERE app = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(app.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read report"))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| Error::Corrupt {
                app: app.to_string(),
                what: "cycle report",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Objects of `app` whose last operation failed, oldest first.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn failures(&self, app: &AppName) -> Result<Vec<FailingObject>, Error> {
        let rows = sqlx::query(
            "SELECT object, op, error, first_at, attempts FROM failures WHERE app = $1 ORDER BY first_at, object",
        )
        .bind(app.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("read failures"))?;
        Ok(rows
            .into_iter()
            .map(|r| FailingObject {
                object: r.get(0),
                op: r.get(1),
                error: r.get(2),
                since: r.get(3),
                attempts: r.get(4),
            })
            .collect())
    }

    /// Counts of managed users and groups of `app` (for status).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn counts(&self, app: &AppName) -> Result<(i64, i64), Error> {
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scim_users WHERE app = $1")
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db("count users"))?;
        let groups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scim_groups WHERE app = $1")
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db("count groups"))?;
        Ok((users, groups))
    }
}

/// Users of [`Store::load_observed_scope`]: `$2` is a JSON array of source ids.
const SCOPE_USERS: &str = "SELECT source_id, scim_id, origin, attrs FROM scim_users
     WHERE app = $1 AND source_id IN (SELECT value FROM json_each($2))";
/// Groups of [`Store::load_observed_scope`]: `$2` is a JSON array of source ids.
const SCOPE_GROUPS: &str = "SELECT source_id, scim_id, origin, display_name FROM scim_groups
     WHERE app = $1 AND source_id IN (SELECT value FROM json_each($2))";
/// Members of [`Store::load_observed_scope`]: `$2` groups, `$3` users, JSON arrays of ids.
const SCOPE_MEMBERS: &str = "SELECT group_id, user_id FROM scim_members
     WHERE app = $1 AND group_id IN (SELECT value FROM json_each($2))
       AND user_id IN (SELECT value FROM json_each($3))";

/// Source ids as a JSON array of strings, for `json_each`.
fn ids_json(ids: &[SourceId]) -> String {
    Value::Array(ids.iter().map(|id| json!(id.as_str())).collect()).to_string()
}

/// Adds rows of `scim_users` (`source_id, scim_id, origin, attrs`) to `observed`.
fn read_users(app: &AppName, rows: Vec<SqliteRow>, observed: &mut Observed) -> Result<(), Error> {
    // Every user has the same few attribute paths: share one key per path.
    let mut keys: HashMap<String, AttrKey> = HashMap::new();
    for row in rows {
        let source_id: String = row.get(0);
        let raw: serde_json::Map<String, Value> = serde_json::from_str(row.get::<&str, _>(3))
            .map_err(|e| Error::Corrupt {
                app: app.to_string(),
                what: "user attributes",
                detail: e.to_string(),
            })?;
        let attrs: Attrs = raw
            .into_iter()
            .map(|(k, v)| {
                let key = keys
                    .entry(k)
                    .or_insert_with_key(|k| AttrKey::from(k.as_str()));
                (key.clone(), v)
            })
            .collect();
        observed.users.insert(
            SourceId::new(source_id),
            ObservedUser {
                scim_id: ScimId::new(row.get::<String, _>(1)),
                origin: origin(app, row.get(2))?,
                attrs,
            },
        );
    }
    Ok(())
}

/// Adds rows of `scim_groups` (`source_id, scim_id, origin, display_name`) to `observed`,
/// without members.
fn read_groups(app: &AppName, rows: Vec<SqliteRow>, observed: &mut Observed) -> Result<(), Error> {
    for row in rows {
        observed.groups.insert(
            SourceId::new(row.get::<String, _>(0)),
            ObservedGroup {
                scim_id: ScimId::new(row.get::<String, _>(1)),
                origin: origin(app, row.get(2))?,
                display_name: row.get(3),
                members: BTreeSet::new(),
            },
        );
    }
    Ok(())
}

/// Adds rows of `scim_members` (`group_id, user_id`) to the groups of `observed`; members of
/// groups not there are ignored.
fn read_members(rows: Vec<SqliteRow>, observed: &mut Observed) {
    for row in rows {
        let gid = SourceId::new(row.get::<String, _>(0));
        if let Some(g) = observed.groups.get_mut(&gid) {
            g.members.insert(SourceId::new(row.get::<String, _>(1)));
        }
    }
}

/// Changes of one commit, sorted by kind, each row a JSON value for `json_each`.
#[derive(Default)]
struct Batches {
    put_users: Vec<Value>,
    set_attrs: Vec<Value>,
    put_groups: Vec<Value>,
    renames: Vec<Value>,
    add_members: Vec<Value>,
    remove_members: Vec<Value>,
    drop_users: Vec<Value>,
    drop_groups: Vec<Value>,
    failed: Vec<Value>,
    succeeded: Vec<Value>,
}

/// A user's attributes as stored: a JSON object in text.
fn attrs_text(attrs: &Attrs) -> String {
    serde_json::to_string(attrs).unwrap_or_else(|_| "{}".into())
}

fn origin(app: &AppName, s: &str) -> Result<Origin, Error> {
    Origin::parse(s).ok_or_else(|| Error::Corrupt {
        app: app.to_string(),
        what: "origin",
        detail: format!("{s:?}"),
    })
}

/// Builds the `attrs` of an observed user from JSON, for tests and tools.
pub fn attrs_from_json(v: Value) -> Attrs {
    match v {
        Value::Object(m) => m.into_iter().map(|(k, v)| (AttrKey::from(k), v)).collect(),
        _ => Attrs::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn round_trip_and_memberships() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let app = AppName::from("crm");
        let user = ObservedUser {
            scim_id: ScimId::from("s1"),
            origin: Origin::Created,
            attrs: attrs_from_json(json!({"userName": "a@x", "active": true})),
        };
        store
            .commit(
                &app,
                &[
                    Change::PutUser("u1".into(), user.clone()),
                    Change::PutGroup("g1".into(), "sg".into(), Origin::Adopted, "Team".into()),
                    Change::AddMembers("g1".into(), vec!["u1".into()]),
                ],
                Utc::now(),
            )
            .await
            .unwrap();
        let o = store.load_observed(&app).await.unwrap();
        assert_eq!(o.users[&SourceId::from("u1")], user);
        assert_eq!(o.groups[&SourceId::from("g1")].origin, Origin::Adopted);
        assert!(
            o.groups[&SourceId::from("g1")]
                .members
                .contains(&SourceId::from("u1"))
        );
        // Another app sees nothing.
        assert_eq!(
            store.load_observed(&AppName::from("other")).await.unwrap(),
            Observed::default()
        );
        store
            .commit(&app, &[Change::DropUser("u1".into())], Utc::now())
            .await
            .unwrap();
        let o = store.load_observed(&app).await.unwrap();
        assert!(o.users.is_empty());
        assert!(o.groups[&SourceId::from("g1")].members.is_empty());
    }

    #[tokio::test]
    async fn every_batched_change_kind_lands() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let app = AppName::from("crm");
        let user = |id: &str| ObservedUser {
            scim_id: ScimId::new(format!("s-{id}")),
            origin: Origin::Created,
            attrs: attrs_from_json(json!({"userName": format!("{id}@x"), "active": true})),
        };
        let mut put: Vec<Change> = (0..250)
            .map(|i| Change::PutUser(SourceId::new(format!("u{i}")), user(&format!("u{i}"))))
            .collect();
        put.push(Change::PutGroup(
            "g1".into(),
            "sg1".into(),
            Origin::Created,
            "One".into(),
        ));
        put.push(Change::PutGroup(
            "g2".into(),
            "sg2".into(),
            Origin::Adopted,
            "Two".into(),
        ));
        put.push(Change::AddMembers(
            "g1".into(),
            (0..250).map(|i| SourceId::new(format!("u{i}"))).collect(),
        ));
        put.push(Change::AddMembers("g2".into(), vec!["u1".into()]));
        store.commit(&app, &put, Utc::now()).await.unwrap();
        let o = store.load_observed(&app).await.unwrap();
        assert_eq!(o.users.len(), 250);
        assert_eq!(o.groups[&SourceId::from("g1")].members.len(), 250);

        let off = attrs_from_json(json!({"userName": "u0@x", "active": false}));
        store
            .commit(
                &app,
                &[
                    Change::SetUserAttrs("u0".into(), off.clone()),
                    Change::RenameGroup("g1".into(), "Uno".into()),
                    Change::RemoveMembers("g1".into(), vec!["u2".into(), "u3".into()]),
                    Change::DropUser("u1".into()),
                    Change::DropGroup("g2".into()),
                    Change::Succeeded {
                        object: "group g1 members".into(),
                    },
                    Change::Failed {
                        object: "group g1 members".into(),
                        op: "add".into(),
                        error: "e".into(),
                    },
                ],
                Utc::now(),
            )
            .await
            .unwrap();
        let o = store.load_observed(&app).await.unwrap();
        let u0 = &o.users[&SourceId::from("u0")];
        assert_eq!(u0.attrs, off);
        assert_eq!(u0.origin, Origin::Created, "an update keeps the origin");
        assert!(!o.users.contains_key(&SourceId::from("u1")));
        let g1 = &o.groups[&SourceId::from("g1")];
        assert_eq!(g1.display_name, "Uno");
        assert_eq!(g1.members.len(), 247, "u1 dropped, u2 and u3 removed");
        assert!(!o.groups.contains_key(&SourceId::from("g2")));
        assert_eq!(
            store.failures(&app).await.unwrap().len(),
            1,
            "a failure in the batch wins"
        );

        // Updates never create rows for objects the store does not know.
        store
            .commit(
                &app,
                &[
                    Change::SetUserAttrs("u-unknown".into(), off),
                    Change::RenameGroup("g-unknown".into(), "X".into()),
                ],
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(store.load_observed(&app).await.unwrap(), o);
    }

    #[tokio::test]
    async fn failures_count_and_clear() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let app = AppName::from("crm");
        let f = Change::Failed {
            object: "user u1".into(),
            op: "create".into(),
            error: "boom".into(),
        };
        store
            .commit(&app, std::slice::from_ref(&f), Utc::now())
            .await
            .unwrap();
        store.commit(&app, &[f], Utc::now()).await.unwrap();
        let fs = store.failures(&app).await.unwrap();
        assert_eq!(fs.len(), 1);
        assert_eq!(fs[0].attempts, 2);
        store
            .commit(
                &app,
                &[Change::Succeeded {
                    object: "user u1".into(),
                }],
                Utc::now(),
            )
            .await
            .unwrap();
        assert!(store.failures(&app).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn scope_loads_only_the_asked_objects() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let app = AppName::from("crm");
        let user = |id: &str| ObservedUser {
            scim_id: ScimId::new(format!("s-{id}")),
            origin: Origin::Created,
            attrs: attrs_from_json(json!({"userName": format!("{id}@x"), "active": true})),
        };
        let all: Vec<SourceId> = (0..10).map(|i| SourceId::new(format!("u{i}"))).collect();
        let mut changes: Vec<Change> = all
            .iter()
            .map(|id| Change::PutUser(id.clone(), user(id.as_str())))
            .collect();
        for (g, members) in [
            ("g1", all.clone()),
            ("g2", vec!["u1".into(), "u2".into()]),
            ("g3", vec!["u3".into()]),
        ] {
            changes.push(Change::PutGroup(
                g.into(),
                ScimId::new(format!("s-{g}")),
                Origin::Adopted,
                g.to_uppercase(),
            ));
            changes.push(Change::AddMembers(g.into(), members));
        }
        store.commit(&app, &changes, Utc::now()).await.unwrap();
        // The same ids in another app must not leak in.
        store
            .commit(&AppName::from("hr"), &changes, Utc::now())
            .await
            .unwrap();

        let users: Vec<SourceId> = vec!["u1".into(), "u3".into(), "u-unknown".into()];
        let groups: Vec<SourceId> = vec!["g1".into(), "g2".into(), "g-unknown".into()];
        let scoped = store
            .load_observed_scope(&app, &users, &groups)
            .await
            .unwrap();

        let full = store.load_observed(&app).await.unwrap();
        let mut expected = Observed::default();
        for id in ["u1", "u3"] {
            let id = SourceId::from(id);
            expected.users.insert(id.clone(), full.users[&id].clone());
        }
        for id in ["g1", "g2"] {
            let id = SourceId::from(id);
            let mut g = full.groups[&id].clone();
            g.members.retain(|m| users.contains(m));
            expected.groups.insert(id, g);
        }
        assert_eq!(scoped, expected);
        let members = |g: &str| -> Vec<&str> {
            scoped.groups[&SourceId::from(g)]
                .members
                .iter()
                .map(SourceId::as_str)
                .collect()
        };
        assert_eq!(members("g1"), ["u1", "u3"]);
        assert_eq!(members("g2"), ["u1"]);
        assert_eq!(scoped.users[&SourceId::from("u3")], user("u3"));

        assert_eq!(
            store.load_observed_scope(&app, &[], &[]).await.unwrap(),
            Observed::default()
        );
        let groups_only = store
            .load_observed_scope(&app, &[], &["g3".into()])
            .await
            .unwrap();
        assert!(groups_only.users.is_empty());
        assert!(groups_only.groups[&SourceId::from("g3")].members.is_empty());
    }

    /// The scoped loads must probe the primary keys, never scan an app's rows: at 100k users a
    /// scan is what makes an activation slow.
    #[tokio::test]
    async fn scope_queries_use_the_primary_keys() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        for sql in [SCOPE_USERS, SCOPE_GROUPS, SCOPE_MEMBERS] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("crm")
                .bind("[]")
                .bind("[]")
                .fetch_all(&store.pool)
                .await
                .unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(3)).collect();
            assert!(
                plan.iter()
                    .any(|p| p.contains("scim_") && p.contains("PRIMARY KEY")
                        || p.contains("sqlite_autoindex_scim_")),
                "{sql}\n{plan:#?}"
            );
            assert!(
                !plan.iter().any(|p| p.starts_with("SCAN scim_")),
                "{sql}\n{plan:#?}"
            );
        }
    }

    #[tokio::test]
    async fn creates_folder_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state/x.db");
        let url = format!("sqlite://{}", path.display());
        Store::open(&url).await.unwrap();
        assert!(path.exists());
        let e = Store::open("postgres://x").await.unwrap_err().to_string();
        assert!(e.contains("service.state"), "{e}");
    }
}
