-- The content pipeline (issue 8): every post and reply Chorus means to publish is one
-- content_items row, from plan to measure; content_events is its stage log, so an operator sees
-- why an item was dropped, blocked or held, and who approved it when.

CREATE TABLE content_items (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
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
CREATE INDEX content_items_stage ON content_items (stage, due_at);
CREATE INDEX content_items_persona ON content_items (persona, platform, created_at);
CREATE INDEX content_items_measure ON content_items (measure_at);

CREATE TABLE content_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL,
    -- plan, dispatch, generate, adapt, review, approve, queue, publish, measure
    stage   TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    detail  TEXT,
    -- A persona, `team_leader`, `publisher`, or the operator's name.
    actor   TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX content_events_item ON content_events (item_id, id);
CREATE INDEX content_events_at ON content_events (at);

-- Engagement of published items, one row per fetch.
CREATE TABLE engagement (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     INTEGER NOT NULL,
    fetched_at  INTEGER NOT NULL,
    likes       INTEGER NOT NULL DEFAULT 0,
    replies     INTEGER NOT NULL DEFAULT 0,
    reposts     INTEGER NOT NULL DEFAULT 0,
    impressions INTEGER
);
CREATE INDEX engagement_item ON engagement (item_id, fetched_at);

-- Who answers a message that mentions several personas: decided once, by the first agent that
-- sees it, for every persona mentioned.
CREATE TABLE thread_assignments (
    platform   TEXT    NOT NULL,
    remote_id  TEXT    NOT NULL,
    first      TEXT    NOT NULL,
    -- Comma-separated persona names, in answering order.
    joiners    TEXT    NOT NULL,
    skipped    TEXT    NOT NULL,
    detail     TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (platform, remote_id)
);

-- Operational events the weekly report counts: rate_limit_wait, rate_limit_refused, restart,
-- circuit_open.
CREATE TABLE ops_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    persona  TEXT,
    platform TEXT,
    subject  TEXT    NOT NULL,
    value_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ops_events_at ON ops_events (at);

-- Weekly reports, by the Monday (UTC) the week starts on.
CREATE TABLE reports (
    week_start   TEXT    PRIMARY KEY,
    generated_at INTEGER NOT NULL,
    markdown     TEXT    NOT NULL,
    json         TEXT    NOT NULL
);

-- A message that mentions several personas is stored once per persona (the coordination above
-- decides who answers): the unique key gains the persona. SQLite cannot alter a constraint, so
-- the table is rebuilt.
CREATE TABLE inbound_events_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
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
CREATE INDEX inbound_events_pending ON inbound_events (persona, platform, state, id);
CREATE INDEX inbound_events_conversation ON inbound_events (platform, conversation);
