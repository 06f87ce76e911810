"""SQLite schema of the correlation ledger (the embedded store).

The ledger is durable state, not a cache: an OTLP request is acknowledged only after the
transaction that records its spans has committed (WAL, synchronous=NORMAL: a committed
transaction survives `kill -9` of the process).

One row per transaction (correlation ID, destination, flow), not per span: a transaction's attempts
and closing span live in its `timeline` (JSON), so recording a span costs at most one row write and
a transaction opened and closed within one batch costs exactly one. Duplicate OTLP deliveries are
recognised by span ID against that state (see ledger.py).

Times are unix seconds (REAL). Span and trace IDs in timelines are lowercase hex.
timeline JSON: {"attempts": [[trace_id, span_id, start, end, n, code, error], ...],
                "close": [stage, trace_id, span_id, start, end, error, idem] | absent,
                "duplicates": [[trace_id, span_id, start, end, idem], ...] | absent}
Stages: 0 source, 1 attempt, 2 confirm, 3 fail.
"""

SCHEMA_VERSION = 3

STAGE_SOURCE, STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL = 0, 1, 2, 3
STAGE_NAMES = {"source": STAGE_SOURCE, "attempt": STAGE_ATTEMPT, "confirm": STAGE_CONFIRM, "fail": STAGE_FAIL}

DDL = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;

-- Transactions waiting for their confirmation. Overdue is derived: deadline < now.
CREATE TABLE IF NOT EXISTS open_tx(
    corr         TEXT NOT NULL,
    dest         TEXT NOT NULL,
    flow         TEXT NOT NULL,
    source       TEXT,
    changed_at   REAL,             -- NULL until the source span arrives
    opened_at    REAL NOT NULL,
    deadline     REAL NOT NULL,
    source_trace BLOB,             -- the source span, for linking
    source_span  BLOB,
    attempts     INTEGER NOT NULL DEFAULT 0,
    timeline     TEXT,             -- JSON, see above; NULL while there are no attempts
    PRIMARY KEY (corr, dest, flow)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS open_tx_by_deadline ON open_tx(deadline);

-- Finished transactions: outcome confirmed | failed | expired. lag is NULL while the source span
-- of a confirmed transaction has not arrived yet (confirm before source), and for failed/expired.
-- A rowid table (rows are appended; the unique index takes the random keys): rows carry the
-- timeline and are too wide for a WITHOUT ROWID table to insert cheaply.
CREATE TABLE IF NOT EXISTS closed_tx(
    corr         TEXT NOT NULL,
    dest         TEXT NOT NULL,
    flow         TEXT NOT NULL,
    source       TEXT,
    outcome      TEXT NOT NULL,
    changed_at   REAL,
    opened_at    REAL,
    deadline     REAL,
    closed_at    REAL NOT NULL,
    lag          REAL,
    source_trace BLOB,
    source_span  BLOB,
    close_span   BLOB,             -- span that closed it: a redelivery of it is not a second apply
    attempts     INTEGER NOT NULL DEFAULT 0,
    timeline     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS closed_tx_by_key ON closed_tx(corr, dest, flow);
CREATE INDEX IF NOT EXISTS closed_tx_by_outcome ON closed_tx(outcome, closed_at);

-- Applied operations with an explicit idempotency key, and duplicate applies of the default key
-- (correlation ID + destination); applies > 1 means duplicate applies.
CREATE TABLE IF NOT EXISTS applies(
    idem       TEXT NOT NULL PRIMARY KEY,
    corr       TEXT NOT NULL,
    dest       TEXT NOT NULL,
    flow       TEXT NOT NULL,
    first_at   REAL NOT NULL,
    last_at    REAL NOT NULL,
    applies    INTEGER NOT NULL,
    first_span BLOB,
    last_span  BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS applies_duplicates ON applies(last_at) WHERE applies > 1;
CREATE INDEX IF NOT EXISTS applies_by_corr ON applies(corr);
"""
