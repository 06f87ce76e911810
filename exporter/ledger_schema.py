"""SQLite schema of the correlation ledger (the embedded store).

The ledger is durable state, not a cache: an OTLP request is acknowledged only after the
transaction that records its spans has committed (WAL, synchronous=NORMAL: a committed
transaction survives `kill -9` of the process).

Times are unix seconds (REAL). Stages: 0 source, 1 attempt, 2 confirm, 3 fail.
"""

SCHEMA_VERSION = 1

STAGE_SOURCE, STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL = 0, 1, 2, 3
STAGE_NAMES = {"source": STAGE_SOURCE, "attempt": STAGE_ATTEMPT, "confirm": STAGE_CONFIRM, "fail": STAGE_FAIL}
STAGE_BY_NUMBER = {v: k for k, v in STAGE_NAMES.items()}

DDL = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;

-- Every correlated stage span, once (duplicate OTLP deliveries of the same span are ignored).
CREATE TABLE IF NOT EXISTS spans(
    trace_id   BLOB NOT NULL,
    span_id    BLOB NOT NULL,
    corr       TEXT NOT NULL,
    flow       TEXT NOT NULL,
    stage      INTEGER NOT NULL,
    source     TEXT,
    dest       TEXT,              -- NULL on a source span that names no destination
    start      REAL NOT NULL,
    end        REAL NOT NULL,
    changed_at REAL,              -- source change time (source spans; optional on others)
    attempt    INTEGER,           -- attempt ordinal, 1 = first try (attempt spans)
    code       TEXT,              -- response code of an attempt
    error      TEXT,              -- error.type
    idem       TEXT,              -- idempotency key (confirm spans)
    dup        INTEGER NOT NULL DEFAULT 0,  -- 1: this confirm was a duplicate apply
    received   REAL NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_corr ON spans(corr);
CREATE INDEX IF NOT EXISTS spans_by_received ON spans(received);

-- Transactions waiting for their confirmation: one row per (correlation ID, destination, flow).
-- Overdue is derived: deadline < now.
CREATE TABLE IF NOT EXISTS open_tx(
    corr        TEXT NOT NULL,
    dest        TEXT NOT NULL,
    flow        TEXT NOT NULL,
    source      TEXT,
    changed_at  REAL,             -- NULL until the source span arrives
    opened_at   REAL NOT NULL,
    deadline    REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_attempt_n   INTEGER,
    last_attempt_end REAL,
    PRIMARY KEY (corr, dest, flow)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS open_tx_by_deadline ON open_tx(deadline);

-- Finished transactions: outcome confirmed | failed | expired. lag is NULL while the
-- source span of a confirmed transaction has not arrived yet (confirm before source).
CREATE TABLE IF NOT EXISTS closed_tx(
    corr       TEXT NOT NULL,
    dest       TEXT NOT NULL,
    flow       TEXT NOT NULL,
    source     TEXT,
    outcome    TEXT NOT NULL,
    changed_at REAL,
    closed_at  REAL NOT NULL,
    lag        REAL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (corr, dest, flow)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS closed_tx_by_outcome ON closed_tx(outcome, closed_at);

-- Applied operations by idempotency key; applies > 1 means duplicate applies.
CREATE TABLE IF NOT EXISTS applies(
    idem     TEXT NOT NULL PRIMARY KEY,
    corr     TEXT NOT NULL,
    dest     TEXT NOT NULL,
    flow     TEXT NOT NULL,
    first_at REAL NOT NULL,
    last_at  REAL NOT NULL,
    applies  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS applies_duplicates ON applies(last_at) WHERE applies > 1;
CREATE INDEX IF NOT EXISTS applies_by_corr ON applies(corr);
"""
