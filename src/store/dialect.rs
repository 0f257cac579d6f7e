//! Everything that differs between the two backends of the store, SQLite and PostgreSQL, in
//! one place: how a `state` URL is opened (pool settings, migrations) and the few statements
//! whose SQL is not the same on both.
//!
//! The rest of the store writes each query once and runs it on either pool (see `on_pool!` in
//! the parent module): both backends take `$1, $2` placeholders, `INSERT … ON CONFLICT`,
//! `RETURNING`, row values and `EXISTS`, and the migrations give them the same tables with the
//! same types as Rust reads them (text, i64). What does differ is reading a JSON array bound as
//! text (how a commit sends a phase of 20k changes as a handful of statements): SQLite's
//! `json_each($2)` is PostgreSQL's `jsonb_array_elements($2::jsonb)`, and "one of these few
//! ids" is `IN (SELECT value FROM json_each($2))` there but `= ANY (ARRAY(…))` here (see
//! [`POSTGRES`]). The statements below are written once, as templates, and [`SQLITE`] and
//! [`POSTGRES`] fill in those fragments. This module must not grow a second copy of a query
//! that only differs by a JSON function.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Error, Pool, db, redact_url};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The statements whose SQL differs between the backends. `$1` is always the app; `$2` (and
/// `$3`) a JSON array as text.
pub(super) struct Dialect {
    /// Upserts users: `$2` is `[[source_id, scim_id, origin, attrs], …]`.
    pub put_users: &'static str,
    /// Replaces the attributes of known users: `$2` is `[[source_id, attrs], …]`.
    pub set_attrs: &'static str,
    /// Upserts groups: `$2` is `[[source_id, scim_id, origin, display_name], …]`.
    pub put_groups: &'static str,
    /// Renames known groups: `$2` is `[[source_id, display_name], …]`.
    pub renames: &'static str,
    /// Adds memberships: `$2` is `[[group_id, user_id], …]`.
    pub add_members: &'static str,
    /// Removes memberships: `$2` is `[[group_id, user_id], …]`.
    pub remove_members: &'static str,
    /// Drops the memberships of users: `$2` is `[source_id, …]`.
    pub drop_user_memberships: &'static str,
    /// Drops users: `$2` is `[source_id, …]`.
    pub drop_users: &'static str,
    /// Drops the memberships of groups: `$2` is `[source_id, …]`.
    pub drop_group_memberships: &'static str,
    /// Drops groups: `$2` is `[source_id, …]`.
    pub drop_groups: &'static str,
    /// Clears failures: `$2` is `[object, …]`.
    pub clear_failures: &'static str,
    /// Users of a scoped load: `$2` is `[source_id, …]`.
    pub scope_users: &'static str,
    /// Groups of a scoped load: `$2` is `[source_id, …]`.
    pub scope_groups: &'static str,
    /// Members of a scoped load: `$2` groups, `$3` users, `[source_id, …]` each.
    pub scope_members: &'static str,
    /// Every member of an app, one row per group: `group_id` and its members' ids as a JSON
    /// array (a whole load reads a thousand rows instead of a row per membership).
    pub members_by_group: &'static str,
}

/// A [`Dialect`] from its table functions: `rows` reads `$2` as rows `j` with the element in
/// `j.value` (JSON); `in_ids2` completes `column …` into "is one of the strings of the array
/// `$2`" for a batch of any size, `few_ids2`/`few_ids3` the same for the few ids of a scoped
/// load (`$2`/`$3`). `set_attrs` and `renames` are whole statements (see [`SQLITE`]).
macro_rules! dialect {
    (rows: $rows:literal, in_ids2: $in_ids2:literal,
     few_ids2: $few_ids2:literal, few_ids3: $few_ids3:literal, json_array_of: $agg:literal,
     set_attrs: $set_attrs:expr, renames: $renames:expr $(,)?) => {
        Dialect {
            put_users: concat!(
                "INSERT INTO scim_users (app, source_id, scim_id, origin, attrs)
                 SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM ",
                $rows,
                " WHERE true
                 ON CONFLICT (app, source_id) DO UPDATE SET scim_id = excluded.scim_id,
                   origin = excluded.origin, attrs = excluded.attrs"
            ),
            set_attrs: $set_attrs,
            put_groups: concat!(
                "INSERT INTO scim_groups (app, source_id, scim_id, origin, display_name)
                 SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM ",
                $rows,
                " WHERE true
                 ON CONFLICT (app, source_id) DO UPDATE SET scim_id = excluded.scim_id,
                   origin = excluded.origin, display_name = excluded.display_name"
            ),
            renames: $renames,
            add_members: concat!(
                "INSERT INTO scim_members (app, group_id, user_id)
                 SELECT $1, j.value ->> 0, j.value ->> 1 FROM ",
                $rows,
                " WHERE true ON CONFLICT (app, group_id, user_id) DO NOTHING"
            ),
            remove_members: concat!(
                "DELETE FROM scim_members WHERE app = $1 AND (group_id, user_id) IN
                 (SELECT j.value ->> 0, j.value ->> 1 FROM ",
                $rows,
                ")"
            ),
            drop_user_memberships: concat!(
                "DELETE FROM scim_members WHERE app = $1 AND user_id ",
                $in_ids2
            ),
            drop_users: concat!(
                "DELETE FROM scim_users WHERE app = $1 AND source_id ",
                $in_ids2
            ),
            drop_group_memberships: concat!(
                "DELETE FROM scim_members WHERE app = $1 AND group_id ",
                $in_ids2
            ),
            drop_groups: concat!(
                "DELETE FROM scim_groups WHERE app = $1 AND source_id ",
                $in_ids2
            ),
            clear_failures: concat!("DELETE FROM failures WHERE app = $1 AND object ", $in_ids2),
            scope_users: concat!(
                "SELECT source_id, scim_id, origin, attrs FROM scim_users
                 WHERE app = $1 AND source_id ",
                $few_ids2
            ),
            scope_groups: concat!(
                "SELECT source_id, scim_id, origin, display_name FROM scim_groups
                 WHERE app = $1 AND source_id ",
                $few_ids2
            ),
            members_by_group: concat!(
                "SELECT group_id, ",
                $agg,
                " FROM scim_members WHERE app = $1 GROUP BY group_id"
            ),
            scope_members: concat!(
                "SELECT group_id, user_id FROM scim_members
                 WHERE app = $1 AND group_id ",
                $few_ids2,
                " AND user_id ",
                $few_ids3
            ),
        }
    };
}

/// SQLite: `json_each` (`WHERE true` keeps `ON CONFLICT` from parsing as a join constraint).
pub(super) const SQLITE: Dialect = dialect!(
    rows: "json_each($2) AS j",
    in_ids2: "IN (SELECT value FROM json_each($2))",
    few_ids2: "IN (SELECT value FROM json_each($2))",
    few_ids3: "IN (SELECT value FROM json_each($3))",
    json_array_of: "json_group_array(user_id)",
    // Upserts driven by the batch (an index probe per row) that only ever meet existing rows;
    // `UPDATE … FROM json_each` made SQLite scan the whole table.
    set_attrs: "INSERT INTO scim_users (app, source_id, scim_id, origin, attrs)
         SELECT $1, j.value ->> 0, '', '', j.value ->> 1 FROM json_each($2) AS j
         WHERE EXISTS (SELECT 1 FROM scim_users u WHERE u.app = $1 AND u.source_id = j.value ->> 0)
         ON CONFLICT (app, source_id) DO UPDATE SET attrs = excluded.attrs",
    renames: "INSERT INTO scim_groups (app, source_id, scim_id, origin, display_name)
         SELECT $1, j.value ->> 0, '', '', j.value ->> 1 FROM json_each($2) AS j
         WHERE EXISTS (SELECT 1 FROM scim_groups g WHERE g.app = $1 AND g.source_id = j.value ->> 0)
         ON CONFLICT (app, source_id) DO UPDATE SET display_name = excluded.display_name",
);

/// PostgreSQL: `jsonb_array_elements`. The few ids of a scoped load are `= ANY (ARRAY(…))`:
/// the planner guesses 100 rows for a set-returning function and, for an app of a few
/// thousand users, would rather hash-join a scan of the table than probe its key for the one
/// or two ids of an activation; `= ANY` of an array is an index condition at any size. A
/// batch stays `IN (SELECT …)`: where `= ANY` is no index condition (memberships by user) it
/// is a linear search of the array per row, which made dropping 20k users take 30 s, where
/// the semi-join hashes.
/// Updates of known rows are plain `UPDATE … FROM` (index probes or a hash join); the SQLite
/// upsert form would, under READ COMMITTED, insert a half-empty row for an object another
/// transaction deleted meanwhile.
pub(super) const POSTGRES: Dialect = dialect!(
    rows: "jsonb_array_elements($2::jsonb) AS j(value)",
    in_ids2: "IN (SELECT value FROM jsonb_array_elements_text($2::jsonb) AS j(value))",
    few_ids2: "= ANY (ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))",
    few_ids3: "= ANY (ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))",
    json_array_of: "json_agg(user_id)::text",
    set_attrs: "UPDATE scim_users AS u SET attrs = j.value ->> 1
         FROM jsonb_array_elements($2::jsonb) AS j(value)
         WHERE u.app = $1 AND u.source_id = j.value ->> 0",
    renames: "UPDATE scim_groups AS g SET display_name = j.value ->> 1
         FROM jsonb_array_elements($2::jsonb) AS j(value)
         WHERE g.app = $1 AND g.source_id = j.value ->> 0",
);

/// Opens `url` (already known to be `sqlite:…`): the file and its folder are created on
/// first use; `sqlite::memory:` is a private database for tests and dry tools.
pub(super) async fn open_sqlite(url: &str) -> Result<Pool, Error> {
    if url == "sqlite::memory:" {
        // One connection: every pooled in-memory connection would be its own database.
        let opts = SqliteConnectOptions::from_str(url).map_err(db("open"))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(db("open"))?;
        SQLITE_MIGRATOR.run(&pool).await?;
        return Ok(Pool::Sqlite(pool));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::Unsupported {
            url: redact_url(url),
        })?;
    let path = std::path::PathBuf::from(path);
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
    SQLITE_MIGRATOR.run(&pool).await?;
    Ok(Pool::Sqlite(pool))
}

/// Connections a process keeps to a PostgreSQL store at most. Every query of the store is
/// short; several replicas share the server's `max_connections` (100 by default).
const POSTGRES_CONNECTIONS: u32 = 8;

/// How long connecting to PostgreSQL (or waiting for a pooled connection) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `url` (already known to be `postgres://…` or `postgresql://…`). The database must
/// exist; the schema is created or brought up to date by the embedded migrations, which take
/// an advisory lock, so replicas starting together migrate once.
pub(super) async fn open_postgres(url: &str) -> Result<Pool, Error> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|source| Error::BadUrl {
            url: redact_url(url),
            detail: source.to_string(),
        })?
        .application_name("scim-sync");
    // First one connection of our own: a server that is down or refuses the login fails the
    // open at once (the pool would retry until its acquire timeout), and it runs the
    // migrations. The pool then connects as it needs.
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts));
    let mut first = match connect.await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        ))),
    }
    .map_err(|source| Error::Connect {
        url: redact_url(url),
        source,
    })?;
    POSTGRES_MIGRATOR.run(&mut first).await?;
    // Closing is a courtesy to the server: the connection goes away when dropped anyway.
    let _ = first.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        // A store that becomes unreachable fails a request within this, rather than hang it.
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(opts);
    Ok(Pool::Postgres(pool))
}
