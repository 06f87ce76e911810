"""SQLite schema of the correlation ledger (the embedded store).

The ledger is durable state, not a cache: an OTLP request is acknowledged only after the
transaction that records its spans has committed (WAL, synchronous=NORMAL: a committed
transaction survives `kill -9` of the process).

One row per transaction (correlation ID, destination, flow), not per span: a transaction's attempts
and closing span live in its `timeline` (JSON), so recording a span costs at most one row write and
a transaction opened and closed within one batch costs exactly one. Duplicate OTLP deliveries are
recognised by span ID against that state (see transitions.py).

Times are unix seconds (REAL). Span and trace IDs in timelines are lowercase hex.
timeline JSON: {"attempts": [[trace_id, span_id, start, end, n, code, error], ...],
                "close": [stage, trace_id, span_id, start, end, error, idem] | absent,
                "duplicates": [[trace_id, span_id, start, end, idem], ...] | absent}
Stages: 0 source, 1 attempt, 2 confirm, 3 fail.
"""

import zlib

SCHEMA_VERSION = 5

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
-- A rowid table: rows are appended in the order they close, so the sweep deletes from the front.
-- It is looked up by corr_hash (see corr_hash() below) plus the key columns; the ledger keeps
-- (corr, dest, flow) unique itself.
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
    timeline     TEXT,
    corr_hash    INTEGER NOT NULL  -- corr_hash(corr)
);
CREATE INDEX IF NOT EXISTS closed_tx_by_hash ON closed_tx(corr_hash);
-- The reconciliation lists of failed and expired transactions; confirmed ones are not indexed.
CREATE INDEX IF NOT EXISTS closed_tx_problems ON closed_tx(outcome, closed_at) WHERE outcome <> 'confirmed';

-- Applied operations with an explicit idempotency key, and duplicate applies of the default key
-- (correlation ID + destination); applies > 1 means duplicate applies. A key is scoped to its
-- destination and flow: the same key applied at two destinations is two applies, not a duplicate.
CREATE TABLE IF NOT EXISTS applies(
    idem       TEXT NOT NULL,
    corr       TEXT NOT NULL,
    dest       TEXT NOT NULL,
    flow       TEXT NOT NULL,
    first_at   REAL NOT NULL,
    last_at    REAL NOT NULL,
    applies    INTEGER NOT NULL,
    first_span BLOB,
    last_span  BLOB,
    PRIMARY KEY (idem, dest, flow)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS applies_duplicates ON applies(last_at) WHERE applies > 1;
CREATE INDEX IF NOT EXISTS applies_by_corr ON applies(corr);
"""


def corr_hash(corr: str) -> int:
    """Index key of closed_tx: the CRC-32 of the correlation ID.

    Correlation IDs are often random (UUIDs), so every closed transaction lands on its own page of
    an index over them, and each such page is written to the WAL and back at every commit. An
    integer key makes the index about a quarter of the size of one over (corr, dest, flow) text,
    so a batch dirties fewer pages (bench/ingest.py, UUID IDs). Collisions only cost a row compare."""
    return zlib.crc32(corr.encode("utf-8", "surrogatepass"))


# Schema version 3 had a unique index over the text key and an index over every outcome.
MIGRATE_FROM_3 = """
ALTER TABLE closed_tx ADD COLUMN corr_hash INTEGER NOT NULL DEFAULT 0;
UPDATE closed_tx SET corr_hash = corr_hash_of(corr);
DROP INDEX IF EXISTS closed_tx_by_key;
DROP INDEX IF EXISTS closed_tx_by_outcome;
"""

# Schema version 4 keyed applies by the idempotency key alone (global across destinations and flows).
MIGRATE_FROM_4 = """
CREATE TABLE applies_v5(
    idem TEXT NOT NULL, corr TEXT NOT NULL, dest TEXT NOT NULL, flow TEXT NOT NULL, first_at REAL NOT NULL,
    last_at REAL NOT NULL, applies INTEGER NOT NULL, first_span BLOB, last_span BLOB,
    PRIMARY KEY (idem, dest, flow)
) WITHOUT ROWID;
INSERT INTO applies_v5 SELECT idem, corr, dest, flow, first_at, last_at, applies, first_span, last_span FROM applies;
DROP TABLE applies;
ALTER TABLE applies_v5 RENAME TO applies;
"""
