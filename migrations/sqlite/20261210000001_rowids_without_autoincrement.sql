-- The tables the reply path inserts into take their ids from SQLite's rowid (the largest id plus
-- one) instead of AUTOINCREMENT. AUTOINCREMENT reads and writes the `sqlite_sequence` table in
-- every statement that inserts, a page in every transaction's log; it differs from the rowid only
-- once the newest row has been deleted, and nothing deletes from these tables. `memories` keeps
-- AUTOINCREMENT: its rows are pruned, and the vector index catches up by id. SQLite cannot alter
-- a column's key, so each table is rebuilt with the same columns, ids, indexes and triggers;
-- the local platform's mentions, rebuilt beside them, lose their rowid (below).

CREATE TABLE inbound_events_new (
    id           INTEGER PRIMARY KEY,
    platform     TEXT    NOT NULL,
    remote_id    TEXT    NOT NULL,
    persona      TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    author_is_persona INTEGER NOT NULL DEFAULT 0,
    text         TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    -- pending: to answer; answered: its reply is queued; held: its reply waits in the airlock;
    -- ignored: not answered (outcome says why).
    state        TEXT    NOT NULL DEFAULT 'pending',
    outcome      TEXT,
    UNIQUE (platform, remote_id, persona)
);
INSERT INTO inbound_events_new
    (id, platform, remote_id, persona, author, author_is_persona, text, conversation, received_at, state, outcome)
    SELECT id, platform, remote_id, persona, author, author_is_persona, text, conversation, received_at, state, outcome
    FROM inbound_events;
DROP TABLE inbound_events;
ALTER TABLE inbound_events_new RENAME TO inbound_events;
CREATE INDEX inbound_events_conversation ON inbound_events (platform, conversation);
CREATE INDEX inbound_events_waiting ON inbound_events (persona, platform, id) WHERE state = 'pending';

CREATE TABLE outbox_new (
    id              INTEGER PRIMARY KEY,
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
INSERT INTO outbox_new
    (id, idempotency_key, persona, platform, kind, text, reply_to, conversation, inbound_id, status, attempts,
     last_error, remote_id, created_at, updated_at, next_attempt_at)
    SELECT id, idempotency_key, persona, platform, kind, text, reply_to, conversation, inbound_id, status, attempts,
        last_error, remote_id, created_at, updated_at, next_attempt_at
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE llm_usage_new (
    id         INTEGER PRIMARY KEY,
    persona    TEXT    NOT NULL,
    provider   TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    task       TEXT    NOT NULL,
    tokens_in  INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    outcome    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    cost_usd   REAL    NOT NULL DEFAULT 0
);
INSERT INTO llm_usage_new
    (id, persona, provider, model, task, tokens_in, tokens_out, latency_ms, outcome, created_at, cost_usd)
    SELECT id, persona, provider, model, task, tokens_in, tokens_out, latency_ms, outcome, created_at, cost_usd
    FROM llm_usage;
DROP TABLE llm_usage;
ALTER TABLE llm_usage_new RENAME TO llm_usage;
CREATE INDEX llm_usage_day ON llm_usage (created_at);

CREATE TABLE audit_log_new (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    persona    TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    detail     TEXT
);
INSERT INTO audit_log_new (id, at, action, persona, platform, subject, outcome, detail)
    SELECT id, at, action, persona, platform, subject, outcome, detail FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_new RENAME TO audit_log;
CREATE INDEX audit_log_subject ON audit_log (subject);

CREATE TABLE local_posts_new (
    id         INTEGER PRIMARY KEY,
    author     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    reply_to   INTEGER,
    client_key TEXT    UNIQUE,
    created_at INTEGER NOT NULL,
    -- The handles the post mentions, a JSON array, indexed by the trigger below.
    mentions   TEXT
);
INSERT INTO local_posts_new (id, author, text, reply_to, client_key, created_at, mentions)
    SELECT id, author, text, reply_to, client_key, created_at, mentions FROM local_posts;
DROP TABLE local_posts;
ALTER TABLE local_posts_new RENAME TO local_posts;
-- The local platform's index of mentions is a key and nothing else: stored as the key itself
-- (WITHOUT ROWID), each mention is one B-tree insert where it was two (the rows and the key's
-- index). Reads are by handle, in post order, which the key serves as before. Rebuilt while no
-- trigger names it (the one above went with the old local_posts), then the trigger is made.
CREATE TABLE local_mentions_new (
    handle  TEXT    NOT NULL,
    post_id INTEGER NOT NULL,
    PRIMARY KEY (handle, post_id)
) WITHOUT ROWID;
INSERT INTO local_mentions_new (handle, post_id) SELECT handle, post_id FROM local_mentions;
DROP TABLE local_mentions;
ALTER TABLE local_mentions_new RENAME TO local_mentions;
CREATE TRIGGER local_posts_mentions AFTER INSERT ON local_posts
WHEN NEW.mentions IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO local_mentions (handle, post_id)
    SELECT value, NEW.id FROM json_each(NEW.mentions);
END;

CREATE TABLE content_items_new (
    id              INTEGER PRIMARY KEY,
    -- The outbox row's idempotency key once queued (and before: the intent's key).
    idempotency_key TEXT    NOT NULL UNIQUE,
    persona         TEXT    NOT NULL,
    platform        TEXT    NOT NULL,
    -- post | reply
    kind            TEXT    NOT NULL,
    -- planned, dispatched, dropped, blocked, held, rejected, expired, queued, published, failed
    stage           TEXT    NOT NULL,
    -- Why it is blocked, held, dropped, rejected or expired.
    reason          TEXT,
    topic           TEXT,
    campaign        TEXT,
    -- When a planned post is due.
    due_at          INTEGER,
    text            TEXT,
    -- The text as generated, when an approver edited it.
    original_text   TEXT,
    reply_to        TEXT,
    conversation    TEXT,
    inbound_id      INTEGER,
    -- The review's violations, JSON: [{"rule": "link", "action": "block", "reason": "…"}].
    flags           TEXT,
    -- The persona that wrote it, or the operator who submitted it.
    submitted_by    TEXT    NOT NULL,
    edited_by       TEXT,
    decided_by      TEXT,
    decided_at      INTEGER,
    expires_at      INTEGER,
    remote_id       TEXT,
    published_at    INTEGER,
    -- When engagement is fetched next (published items only).
    measure_at      INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
INSERT INTO content_items_new
    (id, idempotency_key, persona, platform, kind, stage, reason, topic, campaign, due_at, text, original_text,
     reply_to, conversation, inbound_id, flags, submitted_by, edited_by, decided_by, decided_at, expires_at,
     remote_id, published_at, measure_at, created_at, updated_at)
    SELECT id, idempotency_key, persona, platform, kind, stage, reason, topic, campaign, due_at, text, original_text,
        reply_to, conversation, inbound_id, flags, submitted_by, edited_by, decided_by, decided_at, expires_at,
        remote_id, published_at, measure_at, created_at, updated_at
    FROM content_items;
DROP TABLE content_items;
ALTER TABLE content_items_new RENAME TO content_items;
CREATE INDEX content_items_stage ON content_items (stage, due_at);

CREATE TABLE content_events_new (
    id      INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL,
    -- plan, dispatch, generate, adapt, review, approve, queue, publish, measure
    stage   TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    detail  TEXT,
    -- A persona, `team_leader`, `publisher`, or the operator's name.
    actor   TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
INSERT INTO content_events_new (id, item_id, stage, outcome, detail, actor, at)
    SELECT id, item_id, stage, outcome, detail, actor, at FROM content_events;
DROP TABLE content_events;
ALTER TABLE content_events_new RENAME TO content_events;
CREATE INDEX content_events_item ON content_events (item_id, id);
CREATE INDEX content_events_at ON content_events (at);
