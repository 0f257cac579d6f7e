//! Test support: the store's tests run each body on SQLite and on a scratch PostgreSQL
//! database ([`backend_tests!`]), so that both backends are held to the same assertions.
//!
//! PostgreSQL comes from `SCIM_SYNC_TEST_PG` (a server URL without a database, default
//! `postgres://postgres@127.0.0.1:5432`). Each test creates its own database,
//! `scim_sync_test_<unix seconds>_<random>`, and drops it when the test ends, passed or failed
//! ([`TestDb`]'s `Drop`); databases left by a killed run are dropped by the next run once they
//! are an hour old. An unreachable server fails the tests, saying how to start one: they are
//! never skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

use super::{Pool, Store, dialect, redact_url};

/// Where the scratch databases are created: a server URL without a database.
const PG_ENV: &str = "SCIM_SYNC_TEST_PG";
const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432";
const PREFIX: &str = "scim_sync_test_";
/// Scratch databases older than this are left over from a killed run.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Generates, for each listed `async fn name(db: &TestDb)` of the enclosing module, a test
/// `sqlite::name` and a test `postgres::name` that run it on a fresh database of that backend.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::store::testing::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::store::testing::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )+
        }
    };
}

/// Which backend a [`TestDb`] is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test; any number of [`Store`] handles open it.
pub(crate) struct TestDb {
    backend: Backend,
    url: String,
    /// The SQLite file's folder, removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL server URL and database name, dropped on drop.
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite file in a temporary folder (a file, not `:memory:`, so that several handles
    /// share it).
    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        TestDb {
            backend: Backend::Sqlite,
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A new database on the test PostgreSQL server. Panics, saying how to start the server,
    /// when it cannot be reached.
    pub(crate) async fn postgres() -> TestDb {
        let server = std::env::var(PG_ENV).unwrap_or_else(|_| PG_DEFAULT.to_owned());
        let server = server.trim_end_matches('/').to_owned();
        static CLEANED: OnceCell<()> = OnceCell::const_new();
        let mut admin = admin(&server).await;
        CLEANED
            .get_or_init(|| async { drop_stale(&server).await })
            .await;
        let name = scratch_name();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the scratch database {name}: {e}"));
        let _ = admin.close().await;
        TestDb {
            backend: Backend::Postgres,
            url: format!("{server}/{name}"),
            _dir: None,
            pg: Some((server, name)),
        }
    }

    /// The backend.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// A new store handle on this database.
    pub(crate) async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the test store {}: {e}", redact_url(&self.url)))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on a future: drop the
        // database from a thread with its own. FORCE ends the connections still open.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&server, &name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop a scratch database: {e}"),
            Err(_) => eprintln!("could not drop a scratch database: the thread panicked"),
        }
    }
}

/// A connection to the server's `postgres` database, or a panic saying how to get one.
async fn admin(server: &str) -> PgConnection {
    let url = format!("{server}/postgres");
    match PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {}: {e}\n\
             The store tests run on SQLite and on PostgreSQL, and fail without it. Start a local \
             server with trust auth for user postgres on 127.0.0.1:5432 (Debian: \
             `pg_ctlcluster 15 main start` or `service postgresql start`; not installed: \
             `apt-get install -y postgresql`; .ci/run does all this), or set {PG_ENV} to a \
             server URL without a database (postgres://USER@HOST:PORT) whose user may \
             CREATE DATABASE.",
            redact_url(&url)
        ),
    }
}

/// `scim_sync_test_<unix seconds>_<counter><random>`: unique, and tells its age.
fn scratch_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{PREFIX}{secs}_{n}{}", &random[..12])
}

async fn drop_database(server: &str, name: &str) -> Result<(), String> {
    let url = format!("{server}/postgres");
    let mut c = PgConnection::connect(&url)
        .await
        .map_err(|e| format!("{}: {e}", redact_url(&url)))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await
    .map_err(|e| format!("{name}: {e}"))?;
    let _ = c.close().await;
    Ok(())
}

/// Drops the scratch databases that a killed run left behind (older than [`STALE_AFTER`]).
async fn drop_stale(server: &str) {
    let mut c = admin(server).await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'scim\\_sync\\_test\\_%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    let _ = c.close().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for name in names {
        let born = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if born.is_some_and(|b| now.saturating_sub(b) > STALE_AFTER.as_secs())
            && let Err(e) = drop_database(server, &name).await
        {
            eprintln!("could not drop the stale scratch database {e}");
        }
    }
}

impl Store {
    /// The backend's query plan of each scoped load ([`Store::load_observed_scope`]) of app
    /// `crm`, one line per step (PostgreSQL's after `ANALYZE`, as plans follow statistics).
    pub(crate) async fn scope_plans(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut plans = Vec::new();
        match &self.pool {
            Pool::Sqlite(p) => {
                let d = &dialect::SQLITE;
                for (name, sql) in [
                    ("users", d.scope_users),
                    ("groups", d.scope_groups),
                    ("members", d.scope_members),
                ] {
                    let rows: Vec<(i64, i64, i64, String)> =
                        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                            .bind("crm")
                            .bind("[]")
                            .bind("[]")
                            .fetch_all(p)
                            .await
                            .expect("explain");
                    plans.push((name, rows.into_iter().map(|r| r.3).collect()));
                }
            }
            Pool::Postgres(p) => {
                sqlx::query("ANALYZE").execute(p).await.expect("analyze");
                let d = &dialect::POSTGRES;
                for (name, sql) in [
                    ("users", d.scope_users),
                    ("groups", d.scope_groups),
                    ("members", d.scope_members),
                ] {
                    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                        .bind("crm")
                        .bind(r#"["g1", "u1"]"#);
                    if sql.contains("$3") {
                        q = q.bind(r#"["u1", "u2"]"#);
                    }
                    let lines: Vec<String> = q.fetch_all(p).await.expect("explain");
                    plans.push((name, lines));
                }
            }
        }
        plans
    }

    /// The one integer that `sql` selects, e.g. a `COUNT(*)`.
    pub(crate) async fn count(&self, sql: &'static str) -> i64 {
        on_pool!(&self.pool, |p| sqlx::query_scalar(sql).fetch_one(p).await).expect("count")
    }
}
