//! Per-source resume state (SPEC §3, Graph delta queries): what a source needs to read only
//! the changes after a restart.
//!
//! A row per source key (`graph:{tenant}`) holds two opaque JSON texts the source writes and
//! reads back: the *cursor* (where the next round starts: Graph's `@odata.deltaLink`s) and
//! the *base* (the state that round's changes apply to). The store does not look inside.
//! The cursor may advance alone ([`Store::put_source_cursor`]) when a round changed nothing,
//! so that an unchanged tenant does not rewrite a large base every cycle; cursor and base
//! are otherwise written together, so a reader never pairs a cursor with a base it does not
//! belong to.

use chrono::{SecondsFormat, Utc};

use super::{Error, Store, db};

/// What a source kept: its cursor and the base the cursor's changes apply to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceState {
    /// Where the next round starts (opaque to the store).
    pub cursor: String,
    /// The state the next round applies to (opaque to the store).
    pub base: String,
}

impl Store {
    /// The state kept for `source`, if any.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn source_state(&self, source: &str) -> Result<Option<SourceState>, Error> {
        let row: Option<(String, String)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT cursor, base FROM source_state WHERE source = $1")
                .bind(source)
                .fetch_optional(p)
                .await
        })
        .map_err(db("read source state"))?;
        Ok(row.map(|(cursor, base)| SourceState { cursor, base }))
    }

    /// Keeps `state` for `source`, replacing what was kept.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn put_source_state(&self, source: &str, state: &SourceState) -> Result<(), Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO source_state (source, cursor, base, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, base = excluded.base,
                   updated_at = excluded.updated_at",
            )
            .bind(source)
            .bind(&state.cursor)
            .bind(&state.base)
            .bind(now())
            .execute(p)
            .await
            .map(|_| ())
        })
        .map_err(db("write source state"))?;
        Ok(())
    }

    /// Advances the cursor of `source` over an unchanged base. `false` when nothing is kept
    /// for `source` (nothing is written then: a cursor without its base is useless).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn put_source_cursor(&self, source: &str, cursor: &str) -> Result<bool, Error> {
        let n = on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE source_state SET cursor = $2, updated_at = $3 WHERE source = $1")
                .bind(source)
                .bind(cursor)
                .bind(now())
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(db("write source cursor"))?;
        Ok(n == 1)
    }

    /// Forgets what was kept for `source` (the next round starts from scratch).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn drop_source_state(&self, source: &str) -> Result<(), Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM source_state WHERE source = $1")
                .bind(source)
                .execute(p)
                .await
                .map(|_| ())
        })
        .map_err(db("drop source state"))?;
        Ok(())
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;

    async fn source_state_is_kept_per_source_and_the_cursor_advances_alone(db: &TestDb) {
        let store = db.open().await;
        assert_eq!(store.source_state("graph:t1").await.unwrap(), None);
        assert!(!store.put_source_cursor("graph:t1", "c0").await.unwrap());
        assert_eq!(store.source_state("graph:t1").await.unwrap(), None);
        let s1 = SourceState {
            cursor: "c1".into(),
            base: "{\"b\":1}".into(),
        };
        store.put_source_state("graph:t1", &s1).await.unwrap();
        store
            .put_source_state(
                "graph:t2",
                &SourceState {
                    cursor: "x".into(),
                    base: "y".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(store.source_state("graph:t1").await.unwrap(), Some(s1));
        assert!(store.put_source_cursor("graph:t1", "c2").await.unwrap());
        let kept = store.source_state("graph:t1").await.unwrap().unwrap();
        assert_eq!(
            (kept.cursor.as_str(), kept.base.as_str()),
            ("c2", "{\"b\":1}")
        );
        store.drop_source_state("graph:t1").await.unwrap();
        assert_eq!(store.source_state("graph:t1").await.unwrap(), None);
        assert!(store.source_state("graph:t2").await.unwrap().is_some());
    }

    backend_tests!(source_state_is_kept_per_source_and_the_cursor_advances_alone);
}
