-- PostgreSQL twin of migrations/sqlite/0004_lease_generation.sql: fencing and who holds a
-- lease, in columns (see there).
ALTER TABLE leases
    ADD COLUMN generation BIGINT NOT NULL DEFAULT 1,
    ADD COLUMN pid        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN host       TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN since_ms   BIGINT NOT NULL DEFAULT 0;
