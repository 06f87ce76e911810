"""The ledger's SQLite store (store.LedgerStore): the embedded backend, one file in WAL mode. It
holds every SQL statement the transitions need; tests/test_ledger_plans.py pins their query plans.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import cast

from syncwatch.config.errors import ConfigError, SyncwatchError
from syncwatch.config.models import Config
from syncwatch.ledger.records import ClosedRow, OpenRow, TxKey
from syncwatch.ledger.schema import DDL, MIGRATE_FROM_3, MIGRATE_FROM_4, SCHEMA_VERSION, corr_hash
from syncwatch.ledger.store import BatchWrites


class LedgerSchemaError(SyncwatchError):
    """The ledger file has a schema this syncwatch cannot use, or migrating it failed (the file is unchanged)."""


log = logging.getLogger("syncwatch.ledger")

# Checkpoints run on their own thread (checkpoint.py); this is the writer's backstop, ~80 MB of WAL.
WAL_AUTOCHECKPOINT_PAGES = 20_000
SWEEP_BATCH = 5000
SWEEP_ROUNDS = 20  # per minute: up to 100,000 rows of each table
LOOKUP_CHUNK = 300  # keys per closed_lookup_sql statement
ROWS_PER_INSERT = 32  # rows per multi-row INSERT of a batch's writes (512 parameters, under SQLite's old limit of 999)

_UPSERT_OPEN_INTO = (
    "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, source_trace, source_span, "
    "attempts, timeline) VALUES "
)
_UPSERT_OPEN_ROW = "(?,?,?,?,?,?,?,?,?,?,?)"
_UPSERT_OPEN_SET = (
    " ON CONFLICT(corr, dest, flow) DO UPDATE SET source=excluded.source, changed_at=excluded.changed_at, "
    "deadline=excluded.deadline, attempts=excluded.attempts, "
    "timeline=excluded.timeline, source_trace=COALESCE(excluded.source_trace, source_trace), "
    "source_span=COALESCE(excluded.source_span, source_span)"
)
_CLOSE_STORED = (
    "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, "
    "lag, source_trace, source_span, close_span, attempts, timeline, corr_hash) SELECT corr, dest, flow, ?, ?, ?, "
    "opened_at, deadline, ?, ?, source_trace, source_span, ?, ?, ?, ? FROM open_tx WHERE corr=? AND dest=? AND flow=?"
)
_CLOSE_NEW_INTO = (
    "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, "
    "lag, source_trace, source_span, close_span, attempts, timeline, corr_hash) VALUES "
)
_CLOSE_NEW_ROW = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
# closed_tx rows are found by corr_hash (indexed) and then the key; parameters: (corr_hash, corr, dest, flow).
_CLOSED_KEY = "corr_hash=? AND corr=? AND dest=? AND flow=?"
_CLOSED_ROW = "SELECT outcome, closed_at, lag, changed_at, close_span, timeline FROM closed_tx WHERE " + _CLOSED_KEY
_DELETE_OPEN = "DELETE FROM open_tx WHERE corr=? AND dest=? AND flow=?"
_DELETE_CLOSED = "DELETE FROM closed_tx WHERE " + _CLOSED_KEY
_SET_CLOSED_SOURCE = (
    "UPDATE closed_tx SET lag=?, changed_at=?, source=COALESCE(source, ?), source_trace=?, source_span=? WHERE "
    + _CLOSED_KEY
)
_ADD_CLOSED_ATTEMPT = "UPDATE closed_tx SET attempts=attempts+1, timeline=? WHERE " + _CLOSED_KEY
_SET_CLOSED_TIMELINE = "UPDATE closed_tx SET timeline=? WHERE " + _CLOSED_KEY
_APPLY_SPANS = "SELECT first_span, last_span FROM applies WHERE idem=? AND dest=? AND flow=?"
_INSERT_APPLY = (
    "INSERT INTO applies (idem, corr, dest, flow, first_at, last_at, applies, first_span, last_span) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
_ADD_APPLY = "UPDATE applies SET applies=applies+1, last_at=?, last_span=? WHERE idem=? AND dest=? AND flow=?"
_OPEN_ROWS = "SELECT corr, dest, flow, source, changed_at, opened_at, deadline, timeline FROM open_tx"
_SWEEPS = (
    # closed_tx rows are appended as transactions close: look at the oldest few thousand only
    # (no index on closed_at to keep up to date) and delete those past the horizon.
    f"DELETE FROM closed_tx WHERE rowid IN (SELECT rowid FROM (SELECT rowid, closed_at FROM closed_tx "
    f"ORDER BY rowid LIMIT {SWEEP_BATCH}) WHERE closed_at < ?)",
    f"DELETE FROM applies WHERE (idem, dest, flow) IN (SELECT idem, dest, flow FROM applies WHERE last_at < ? "
    f"LIMIT {SWEEP_BATCH})",
)


def _register_identity_adapters() -> None:
    """sqlite3 binds an int, float, str or bytearray as it is, but looks for an adapter for any other
    parameter: for None and bytes (span IDs) it finds none only after a type attribute lookup that
    raises and clears an AttributeError, a few hundred ns per value, several per row the ledger
    writes. Adapters that return the value itself make that one dict lookup and a C call; every
    value is bound exactly as before, for every sqlite3 connection in the process."""
    sqlite3.register_adapter(bytes, bytes.__bytes__)  # the very object (an exact bytes)
    sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))  # None, from a C method


_register_identity_adapters()


class RowInsert:
    """An INSERT of many rows given as tuples in column order: ROWS_PER_INSERT rows per statement
    (VALUES (...),(...),...), the rest one per statement. Per statement, not per row, SQLite then sets
    up and halts its program and the sqlite3 module resets it and releases the GIL; rows are inserted
    in the order given, exactly as one statement per row would."""

    __slots__ = ("many", "one")

    def __init__(self, into: str, row: str, tail: str = ""):
        self.one = into + row + tail
        self.many = into + ",".join([row] * ROWS_PER_INSERT) + tail

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
        n = ROWS_PER_INSERT
        full = len(rows) - len(rows) % n
        if full:
            conn.executemany(self.many, [list(chain.from_iterable(rows[i : i + n])) for i in range(0, full, n)])
        if full < len(rows):
            conn.executemany(self.one, rows[full:])


_CLOSE_NEW = RowInsert(_CLOSE_NEW_INTO, _CLOSE_NEW_ROW)
_UPSERT_OPEN = RowInsert(_UPSERT_OPEN_INTO, _UPSERT_OPEN_ROW, _UPSERT_OPEN_SET)


def closed_lookup_sql(n: int) -> str:
    """SELECT the closed rows of n keys, given as (corr, dest, flow, corr_hash) parameters. A join
    from the VALUES list, not `(...) IN (VALUES ...)`: SQLite plans that row-value IN as a scan
    of closed_tx, whose cost grows with every transaction ever closed."""
    return (
        "SELECT c.corr, c.dest, c.flow, outcome, closed_at, lag, changed_at, close_span, timeline "
        "FROM (VALUES " + ",".join(["(?,?,?,?)"] * n) + ") AS k CROSS JOIN closed_tx AS c "
        "ON c.corr_hash = k.column4 AND c.corr = k.column1 AND c.dest = k.column2 AND c.flow = k.column3"
    )


def _closed_key(key: TxKey) -> tuple[int, str, str, str]:
    return (corr_hash(key[0]), *key)


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the ledger's pragmas (the writer's and the checkpointer's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a committed transaction survives a process crash (kill -9); only an OS crash
    # or power loss can lose the last commits, which is the trade every WAL database makes.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    return conn


class SqliteStore:
    """store.LedgerStore on one SQLite file: opens it, migrates older schemas, creates the tables."""

    def __init__(self, config: Config):
        self.path = config.storage.ledger_path
        try:
            self.conn = connect(self.path)
            self.conn.execute("PRAGMA user_version")  # touches the file: fails here if it cannot be opened
        except (OSError, sqlite3.Error) as exc:
            key = "storage.sqlite_path" if config.storage.sqlite_path else "storage.data_dir"
            raise ConfigError(
                key, f"cannot open the ledger at {self.path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        version = self._schema_version()
        if version in (3, 4):
            self._migrate(version)
        elif version not in (None, SCHEMA_VERSION):
            raise LedgerSchemaError(
                f"ledger {self.path} has schema version {version}, this syncwatch "
                f"needs {SCHEMA_VERSION}: move the old file away (or set storage.sqlite_path)"
            )
        self.conn.executescript(DDL)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _migrate(self, version: int) -> None:
        log.info("ledger %s: migrating schema %d -> %d", self.path, version, SCHEMA_VERSION)
        self.conn.create_function("corr_hash_of", 1, corr_hash, deterministic=True)
        steps = (MIGRATE_FROM_3 if version == 3 else "") + MIGRATE_FROM_4
        try:
            self.conn.executescript(
                f"BEGIN IMMEDIATE; {steps} UPDATE meta SET value='{SCHEMA_VERSION}' WHERE key='schema_version'; COMMIT;"
            )
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")  # the file stays at its old schema, as it was
            raise LedgerSchemaError(
                f"ledger {self.path}: migrating schema {version} -> {SCHEMA_VERSION} failed, the file is unchanged: {exc}"
            ) from None

    def _schema_version(self) -> int | None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            return None
        return int(row[0]) if row else None

    # ---- the write transaction -----------------------------------------------------------------
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # ---- start ---------------------------------------------------------------------------------
    def open_rows(self) -> Iterator[OpenRow]:
        rows = self.conn.execute(_OPEN_ROWS)
        new = tuple.__new__
        while chunk := rows.fetchmany(50_000):
            for row in chunk:
                yield new(OpenRow, row)

    def closed_hashes(self) -> Iterator[int]:
        rows = self.conn.execute("SELECT corr_hash FROM closed_tx")
        while chunk := rows.fetchmany(50_000):
            for (h,) in chunk:
                yield h

    # ---- closed transactions -------------------------------------------------------------------
    def closed_rows(self, keys: Sequence[TxKey]) -> dict[TxKey, ClosedRow]:
        found: dict[TxKey, ClosedRow] = {}
        new = tuple.__new__
        for i in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[i : i + LOOKUP_CHUNK]
            params = [v for key in chunk for v in (*key, corr_hash(key[0]))]
            for row in self.conn.execute(closed_lookup_sql(len(chunk)), params):
                found[row[:3]] = new(ClosedRow, row[3:])
        return found

    def closed_row(self, key: TxKey) -> ClosedRow | None:
        row = self.conn.execute(_CLOSED_ROW, _closed_key(key)).fetchone()
        return None if row is None else tuple.__new__(ClosedRow, row)

    def set_closed_source(
        self,
        key: TxKey,
        lag: float | None,
        changed_at: float,
        source: str | None,
        source_trace: bytes,
        source_span: bytes,
    ) -> None:
        self.conn.execute(_SET_CLOSED_SOURCE, (lag, changed_at, source, source_trace, source_span, *_closed_key(key)))

    def add_closed_attempt(self, key: TxKey, timeline: str) -> None:
        self.conn.execute(_ADD_CLOSED_ATTEMPT, (timeline, *_closed_key(key)))

    def set_closed_timeline(self, key: TxKey, timeline: str) -> None:
        self.conn.execute(_SET_CLOSED_TIMELINE, (timeline, *_closed_key(key)))

    # ---- applies of idempotency keys -----------------------------------------------------------
    def apply_spans(self, idem: str, dest: str, flow: str) -> tuple[bytes | None, bytes | None] | None:
        row = self.conn.execute(_APPLY_SPANS, (idem, dest, flow)).fetchone()
        return None if row is None else (row[0], row[1])

    def insert_apply(self, idem: str, key: TxKey, at: float, span: bytes, applies: int) -> None:
        corr, dest, flow = key
        self.conn.execute(_INSERT_APPLY, (idem, corr, dest, flow, at, at, applies, span, span))

    def add_apply(self, idem: str, dest: str, flow: str, at: float, span: bytes) -> None:
        self.conn.execute(_ADD_APPLY, (at, span, idem, dest, flow))

    # ---- the batch -----------------------------------------------------------------------------
    def write_batch(self, writes: BatchWrites) -> None:
        conn = self.conn
        if writes.closed_deletes:
            conn.executemany(_DELETE_CLOSED, [_closed_key(key) for key in writes.closed_deletes])
        if writes.stored_closes:
            conn.executemany(_CLOSE_STORED, writes.stored_closes.values())
        if writes.open_deletes:
            conn.executemany(_DELETE_OPEN, writes.open_deletes)
        if writes.new_closes:
            _CLOSE_NEW.run(conn, list(writes.new_closes.values()))
        if writes.open_upserts:
            _UPSERT_OPEN.run(conn, writes.open_upserts)

    # ---- housekeeping --------------------------------------------------------------------------
    def sweep(self, cutoff: float) -> None:
        for sql in _SWEEPS:
            try:
                for _ in range(SWEEP_ROUNDS):  # bounded, so the writer is back to intake quickly
                    if self.conn.execute(sql, (cutoff,)).rowcount == 0:
                        break
            except sqlite3.Error:
                # Sweeping loses nothing when it fails; it only delays clean-up until the next minute.
                log.exception("ledger sweep failed; will retry in a minute")

    def close(self) -> None:
        self.conn.close()
