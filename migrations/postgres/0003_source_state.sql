-- PostgreSQL twin of migrations/sqlite/0003_source_state.sql (dialect notes in 0001_init.sql).
-- What a source keeps between snapshots to read only the changes (Graph delta queries):
-- per source key (e.g. 'graph:{tenant}'), the cursor (where the next round starts, e.g. the
-- @odata.deltaLinks) and the base (the state the next round's changes apply to). Both are
-- opaque JSON to the store. The cursor may advance alone when a round changed nothing.
CREATE TABLE source_state (
    source     TEXT COLLATE "C" PRIMARY KEY,
    cursor     TEXT NOT NULL,
    base       TEXT NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL     -- RFC 3339
);
