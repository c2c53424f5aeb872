-- Chorus schema, SQLite flavour. Times are epoch milliseconds (INTEGER); see migrations/postgres for
-- the same schema on Postgres. Keep the two in step.

CREATE TABLE inbound_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    platform     TEXT    NOT NULL,
    remote_id    TEXT    NOT NULL,
    persona      TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    author_is_persona INTEGER NOT NULL DEFAULT 0,
    text         TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    -- pending: stored, not yet answered; answered: its reply is in the outbox; ignored: loop guard.
    state        TEXT    NOT NULL DEFAULT 'pending',
    outcome      TEXT,
    UNIQUE (platform, remote_id)
);
CREATE INDEX inbound_events_pending ON inbound_events (persona, platform, state, id);
CREATE INDEX inbound_events_conversation ON inbound_events (platform, conversation);

CREATE TABLE cursors (
    persona    TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    cursor     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (persona, platform)
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    persona         TEXT    NOT NULL,
    platform        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    reply_to        TEXT,
    conversation    TEXT,
    inbound_id      INTEGER,
    -- pending: to publish; sent: published (remote_id set); failed: refused for good by the platform.
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    remote_id       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE memories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    persona      TEXT    NOT NULL,
    platform     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    conversation TEXT,
    author       TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX memories_persona ON memories (persona, id);
CREATE INDEX memories_conversation ON memories (persona, conversation, id);

CREATE TABLE llm_usage (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    persona    TEXT    NOT NULL,
    provider   TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    task       TEXT    NOT NULL,
    tokens_in  INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    outcome    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    persona    TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    detail     TEXT
);
CREATE INDEX audit_log_subject ON audit_log (subject);

-- The built-in local platform.
CREATE TABLE local_posts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    author     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    reply_to   INTEGER,
    client_key TEXT    UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE local_mentions (
    handle  TEXT    NOT NULL,
    post_id INTEGER NOT NULL,
    PRIMARY KEY (handle, post_id)
);
