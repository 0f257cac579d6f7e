//! Test support: the store's tests run each body on SQLite and on a scratch PostgreSQL
//! database ([`backend_tests!`]), so that both backends are held to the same assertions.
//!
//! The PostgreSQL databases are the testkit's [`ScratchDb`]s (server from
//! `SCIM_SYNC_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`; created per test,
//! dropped when it ends, passed or failed). An unreachable server fails the tests, saying how
//! to start one: they are never skipped.

use scim_sync_testkit::postgres::ScratchDb;

use super::{Pool, Store, dialect, redact_url};

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
    /// The PostgreSQL database, dropped on drop.
    _pg: Option<ScratchDb>,
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
            _pg: None,
        }
    }

    /// A new database on the test PostgreSQL server. Panics, saying how to start the server,
    /// when it cannot be reached.
    pub(crate) async fn postgres() -> TestDb {
        let pg = ScratchDb::create().await.unwrap_or_else(|e| panic!("{e}"));
        TestDb {
            backend: Backend::Postgres,
            url: pg.url(),
            _dir: None,
            _pg: Some(pg),
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
