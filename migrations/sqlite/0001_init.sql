-- What each app holds, as last confirmed by the app. One row per managed object.
CREATE TABLE scim_users (
    app        TEXT NOT NULL,
    source_id  TEXT NOT NULL,
    scim_id    TEXT NOT NULL,
    origin     TEXT NOT NULL,          -- 'created' | 'adopted'
    attrs      TEXT NOT NULL,          -- JSON object: SCIM path -> value last sent and confirmed
    PRIMARY KEY (app, source_id)
);

CREATE TABLE scim_groups (
    app          TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    scim_id      TEXT NOT NULL,
    origin       TEXT NOT NULL,
    display_name TEXT NOT NULL,
    PRIMARY KEY (app, source_id)
);

CREATE TABLE scim_members (
    app       TEXT NOT NULL,
    group_id  TEXT NOT NULL,           -- source id of the group
    user_id   TEXT NOT NULL,           -- source id of the user
    PRIMARY KEY (app, group_id, user_id)
);

-- Per-app facts learnt from the app, e.g. the member-removal form it accepts.
CREATE TABLE app_flags (
    app   TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app, key)
);

-- Objects whose last operation failed; cleared when one succeeds.
CREATE TABLE failures (
    app        TEXT NOT NULL,
    object     TEXT NOT NULL,          -- e.g. 'user u-alice'
    op         TEXT NOT NULL,
    error      TEXT NOT NULL,
    first_at   TEXT NOT NULL,
    last_at    TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    PRIMARY KEY (app, object)
);

-- Cycle reports (JSON), newest kept per app.
CREATE TABLE cycle_reports (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    app        TEXT NOT NULL,
    started_at TEXT NOT NULL,
    report     TEXT NOT NULL
);
CREATE INDEX cycle_reports_app ON cycle_reports (app, id);
