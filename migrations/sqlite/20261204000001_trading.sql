-- Trading: the Trader's trades (paper and live), the audit trail of what it decided, paper
-- balances and operator flags (the kill switch). Amounts are token smallest units and `value` is
-- USD micro-units, both INTEGER (u64 in Rust; values above i64::MAX are refused, never wrapped).
-- Times are epoch milliseconds. See migrations/postgres for the same tables on Postgres.

-- One row per trade the Trader proposed. Every status change is a compare-and-set on `status`:
-- awaiting_approval -> approved | rejected | expired; approved -> executing;
-- executing -> filled (paper) | signed (live) | failed; signed -> sent | failed;
-- sent -> confirmed | failed | expired.
CREATE TABLE trades (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    persona                 TEXT    NOT NULL,
    -- paper: filled against paper_balances; live: signed and sent to the chain.
    mode                    TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    input_mint              TEXT    NOT NULL,
    output_mint             TEXT    NOT NULL,
    in_amount               INTEGER NOT NULL,
    -- As quoted.
    out_amount              INTEGER NOT NULL,
    -- USD micro-units of the trade when quoted.
    value                   INTEGER NOT NULL,
    slippage_bps            INTEGER NOT NULL,
    -- The model's reason for the trade.
    reason                  TEXT    NOT NULL,
    -- The quote, JSON.
    quote                   TEXT    NOT NULL,
    -- Live only: the transaction's signature, the signed transaction (base64) and the last block
    -- height its blockhash is valid for.
    signature               TEXT,
    signed_tx               TEXT,
    last_valid_block_height INTEGER,
    -- Awaiting approval until then; an operator's decision (who, when) once approved or rejected.
    approval_expires_at     INTEGER,
    decided_by              TEXT,
    decided_at              INTEGER,
    -- When it entered `executing`: daily limits and cool-downs count from here, also after a restart.
    executed_at             INTEGER,
    error                   TEXT,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX trades_persona_status ON trades (persona, status);
-- The approval-expiry sweep across personas.
CREATE INDEX trades_status_expiry ON trades (status, approval_expires_at);
-- A signature is one transaction: never two trades (NULLs repeat freely).
CREATE UNIQUE INDEX trades_signature ON trades (signature);

-- Everything the Trader decided, as written by it (event name and JSON detail).
CREATE TABLE trade_audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    persona  TEXT    NOT NULL,
    trade_id INTEGER,
    event    TEXT    NOT NULL,
    -- JSON.
    detail   TEXT    NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX trade_audit_persona ON trade_audit (persona, id);
CREATE INDEX trade_audit_trade ON trade_audit (trade_id, id);

-- Paper trading: each persona's token balances (smallest units), moved by paper fills.
CREATE TABLE paper_balances (
    persona TEXT    NOT NULL,
    mint    TEXT    NOT NULL,
    amount  INTEGER NOT NULL,
    PRIMARY KEY (persona, mint)
);

-- A persona's paper account, created with its seeded balances on its first start.
CREATE TABLE paper_accounts (
    persona        TEXT    PRIMARY KEY,
    -- USD micro-units of the seeded portfolio, recorded once when first priced.
    starting_value INTEGER,
    created_at     INTEGER NOT NULL
);

-- Operator switches of the Trader (the kill switch), with who set them and when.
CREATE TABLE trading_flags (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
