-- Fencing (SPEC §7.1) and who holds a lease, in columns a status can show.
-- generation: increases every time the lease changes holder (never on a renewal by the same
-- holder, never back: a released lease keeps its row), so a writer that checks "I still hold
-- the app at generation G" before a phase never writes after another holder took over.
-- pid, host: the holding process; since_ms: when this holder took the lease (unix ms).
-- Rows from before this migration read pid 0, host '' and since 0 until taken anew. (A
-- binary older than this migration refuses to open the store once it ran: sqlx reports the
-- applied migration it does not know, so the two versions never share leases.)
ALTER TABLE leases ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE leases ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN since_ms INTEGER NOT NULL DEFAULT 0;
