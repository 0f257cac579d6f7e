//! Scratch PostgreSQL databases for tests and benchmarks: each one is created empty on the
//! test server and dropped when its [`ScratchDb`] is dropped, passed or failed.
//!
//! The server comes from `SCIM_SYNC_TEST_PG` (a server URL without a database, default
//! `postgres://postgres@127.0.0.1:5432`). Names are `scim_sync_test_<unix seconds>_<unique>`,
//! so they tell their age: databases a killed run left behind are dropped by the next run
//! once they are an hour old. An unreachable server is an error that says how to start one;
//! nothing is skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

/// Where the scratch databases are created: a server URL without a database.
pub const PG_ENV: &str = "SCIM_SYNC_TEST_PG";
const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432";
const PREFIX: &str = "scim_sync_test_";
/// Scratch databases older than this are left over from a killed run.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A fresh, empty database on the test server; dropped (connections and all) on drop.
#[derive(Debug)]
pub struct ScratchDb {
    server: String,
    name: String,
}

impl ScratchDb {
    /// Creates a new database on the test server.
    ///
    /// # Errors
    /// The server cannot be reached (the message says how to start one) or refuses
    /// `CREATE DATABASE`.
    pub async fn create() -> Result<ScratchDb, String> {
        let server = std::env::var(PG_ENV).unwrap_or_else(|_| PG_DEFAULT.to_owned());
        let server = server.trim_end_matches('/').to_owned();
        static CLEANED: OnceCell<()> = OnceCell::const_new();
        CLEANED.get_or_init(|| drop_stale(&server)).await;
        let mut admin = admin(&server).await?;
        let name = scratch_name();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("cannot create the scratch database {name}: {e}"))?;
        let _ = admin.close().await;
        Ok(ScratchDb { server, name })
    }

    /// The database's URL, as `state = "…"` takes it.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside a runtime, which cannot block on a future: drop the database
        // from a thread with its own. FORCE ends the connections still open.
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

/// A connection to the server's `postgres` database.
async fn admin(server: &str) -> Result<PgConnection, String> {
    let url = format!("{server}/postgres");
    PgConnection::connect(&url).await.map_err(|e| {
        format!(
            "PostgreSQL is not reachable at {}: {e}\n\
             These tests run on PostgreSQL and fail without it. Start a local server with \
             trust auth for user postgres on 127.0.0.1:5432 (Debian: `pg_ctlcluster 15 main \
             start` or `service postgresql start`; not installed: `apt-get install -y \
             postgresql`; .ci/run does all this), or set {PG_ENV} to a server URL without a \
             database (postgres://USER@HOST:PORT) whose user may CREATE DATABASE.",
            scim_sync::store::redact_url(&url)
        )
    })
}

/// `scim_sync_test_<unix seconds>_<counter><random>`: unique, and tells its age.
fn scratch_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u64 = rand::random();
    format!("{PREFIX}{}_{n}{random:016x}", unix_secs())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn drop_database(server: &str, name: &str) -> Result<(), String> {
    let mut c = admin(server).await?;
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
    let Ok(mut c) = admin(server).await else {
        return;
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'scim\\_sync\\_test\\_%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    let _ = c.close().await;
    let now = unix_secs();
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
