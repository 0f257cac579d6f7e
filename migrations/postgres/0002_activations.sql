-- PostgreSQL twin of migrations/sqlite/0002_activations.sql (dialect notes in 0001_init.sql).
-- PIM activations (SPEC §4, §6.4, §6.5): (group, user) is a member until expires_at, on top of
-- the source. Kept across restarts so that a deferred activation is applied by the next cycle
-- and an expiry is revoked even if the process was down when it fell due.
CREATE TABLE activations (
    id          TEXT COLLATE "C" PRIMARY KEY,
    group_id    TEXT COLLATE "C" NOT NULL,   -- source id of the group
    user_id     TEXT COLLATE "C" NOT NULL,   -- source id of the user
    expires_at  TEXT COLLATE "C" NOT NULL,   -- RFC 3339
    expires_ms  BIGINT NOT NULL,             -- the same instant in unix ms, for comparisons
    received_at TEXT COLLATE "C" NOT NULL,   -- RFC 3339, fixed width (sorts as text)
    origin      TEXT COLLATE "C" NOT NULL    -- 'webhook' | 'pim-poll' | 'demo' | …: free text
);
CREATE INDEX activations_expiry ON activations (expires_ms);
CREATE INDEX activations_member ON activations (group_id, user_id);

-- Where each activation stands for each app it concerns.
CREATE TABLE activation_apps (
    activation_id TEXT COLLATE "C" NOT NULL REFERENCES activations (id) ON DELETE CASCADE,
    app           TEXT COLLATE "C" NOT NULL,
    state         TEXT COLLATE "C" NOT NULL, -- 'pending' | 'pushed' | 'deferred' | 'applied' | 'removed'
    detail        TEXT COLLATE "C",          -- why deferred, the last push error, …
    latency_ms    BIGINT,                    -- activation received → app confirmed
    updated_at    TEXT COLLATE "C" NOT NULL, -- RFC 3339
    PRIMARY KEY (activation_id, app)
);
CREATE INDEX activation_apps_state ON activation_apps (app, state);

-- One writer per app across processes (SPEC §6.2): the holder owns the app until expires_ms.
CREATE TABLE leases (
    app        TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,    -- e.g. a process-unique id
    info       TEXT NOT NULL,                -- free text for humans: command, host, pid
    expires_ms BIGINT NOT NULL               -- unix ms
);
