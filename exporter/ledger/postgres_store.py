"""The ledger's PostgreSQL store (store.LedgerStore), for a ledger that outlives one machine's volume.

psycopg 3, synchronous: the store is used by one thread (the ledger writer), so an async driver
would only add a loop hop per batch; psycopg's executemany pipelines a batch's rows in one round
trip. The schema is created and versioned here (meta.schema_version, like the SQLite one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from syncwatch.config.errors import ConfigError
from syncwatch.config.models import Config, PostgresConfig
from syncwatch.ledger import handoff
from syncwatch.ledger.lease import LEASE_NAME
from syncwatch.ledger.records import ClosedRow, Event, OpenRow, TxKey
from syncwatch.ledger.schema import corr_hash
from syncwatch.ledger.store import BatchWrites, StoreBusy

log = logging.getLogger("syncwatch.ledger")

PG_SCHEMA_VERSION = 2
SWEEP_BATCH = 5000
SWEEP_ROUNDS = 20
LOOKUP_CHUNK = 300
FETCH_ROWS = 50_000
HANDOFF_DRAIN_ROWS = 8  # follower batches the leader applies in one transaction
# Advisory lock key (any constant): one schema migration at a time.
SCHEMA_LOCK = 0x5359_4E43_0002

# Replicas (version 2): the leader lease (lease.py) and the handoff of followers' spans to the leader.
# A handoff row is one follower batch: its events as a compact JSON list (handoff.py).
REPLICA_DDL = """
CREATE TABLE IF NOT EXISTS leader_lease(
    name text PRIMARY KEY, holder text NOT NULL, epoch bigint NOT NULL, expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS handoff(
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, spans integer NOT NULL, events bytea NOT NULL
);
"""
# Handoff rows the leader could not decode, moved aside (with why) instead of blocking the handoff
# table; an operator reads them and deletes them. Added to version 2 without a new version: a table
# older replicas never touch, so they keep starting during a rolling update (a newer version would
# make them refuse the schema).
REJECTED_DDL = """
CREATE TABLE IF NOT EXISTS handoff_rejected(
    id bigint PRIMARY KEY, spans integer NOT NULL, events bytea NOT NULL, reason text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
"""

# Migrations from older PostgreSQL schema versions: {from_version: SQL}.
MIGRATIONS: dict[int, str] = {1: REPLICA_DDL}

DDL = (
    """
CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value text);
CREATE TABLE IF NOT EXISTS open_tx(
    corr text NOT NULL, dest text NOT NULL, flow text NOT NULL, source text,
    changed_at double precision, opened_at double precision NOT NULL, deadline double precision NOT NULL,
    source_trace bytea, source_span bytea, attempts integer NOT NULL DEFAULT 0, timeline text,
    PRIMARY KEY (corr, dest, flow)
);
CREATE INDEX IF NOT EXISTS open_tx_by_deadline ON open_tx(deadline);
-- id: the order rows closed in, so the sweep deletes from the front (SQLite's rowid).
CREATE TABLE IF NOT EXISTS closed_tx(
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    corr text NOT NULL, dest text NOT NULL, flow text NOT NULL, source text, outcome text NOT NULL,
    changed_at double precision, opened_at double precision, deadline double precision,
    closed_at double precision NOT NULL, lag double precision, source_trace bytea, source_span bytea,
    close_span bytea, attempts integer NOT NULL DEFAULT 0, timeline text, corr_hash bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS closed_tx_by_hash ON closed_tx(corr_hash);
CREATE INDEX IF NOT EXISTS closed_tx_problems ON closed_tx(outcome, closed_at) WHERE outcome <> 'confirmed';
CREATE TABLE IF NOT EXISTS applies(
    idem text NOT NULL, corr text NOT NULL, dest text NOT NULL, flow text NOT NULL,
    first_at double precision NOT NULL, last_at double precision NOT NULL, applies integer NOT NULL,
    first_span bytea, last_span bytea,
    PRIMARY KEY (idem, dest, flow)
);
CREATE INDEX IF NOT EXISTS applies_duplicates ON applies(last_at) WHERE applies > 1;
CREATE INDEX IF NOT EXISTS applies_by_corr ON applies(corr);
"""
    + REPLICA_DDL
    + REJECTED_DDL
)

_UPSERT_OPEN = (
    "INSERT INTO open_tx AS o (corr, dest, flow, source, changed_at, opened_at, deadline, source_trace, "
    "source_span, attempts, timeline) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (corr, dest, flow) "
    "DO UPDATE SET source=excluded.source, changed_at=excluded.changed_at, deadline=excluded.deadline, "
    "attempts=excluded.attempts, timeline=excluded.timeline, "
    "source_trace=COALESCE(excluded.source_trace, o.source_trace), source_span=COALESCE(excluded.source_span, o.source_span)"
)
_CLOSED_COLS = (
    "corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, lag, source_trace, "
    "source_span, close_span, attempts, timeline, corr_hash"
)
_CLOSE_STORED = (
    f"INSERT INTO closed_tx ({_CLOSED_COLS}) SELECT corr, dest, flow, %s, %s, %s, opened_at, deadline, %s, %s, "
    "source_trace, source_span, %s, %s, %s, %s FROM open_tx WHERE corr=%s AND dest=%s AND flow=%s"
)
_CLOSE_NEW = f"INSERT INTO closed_tx ({_CLOSED_COLS}) VALUES ({','.join(['%s'] * 16)})"
_CLOSED_KEY = "corr_hash=%s AND corr=%s AND dest=%s AND flow=%s"
_CLOSED_ROW = "SELECT outcome, closed_at, lag, changed_at, close_span, timeline FROM closed_tx WHERE " + _CLOSED_KEY
_DELETE_OPEN = "DELETE FROM open_tx WHERE corr=%s AND dest=%s AND flow=%s"
_DELETE_CLOSED = "DELETE FROM closed_tx WHERE " + _CLOSED_KEY
_SET_CLOSED_SOURCE = (
    "UPDATE closed_tx SET lag=%s, changed_at=%s, source=COALESCE(source, %s), source_trace=%s, source_span=%s "
    "WHERE " + _CLOSED_KEY
)
_ADD_CLOSED_ATTEMPT = "UPDATE closed_tx SET attempts=attempts+1, timeline=%s WHERE " + _CLOSED_KEY
_SET_CLOSED_TIMELINE = "UPDATE closed_tx SET timeline=%s WHERE " + _CLOSED_KEY
_APPLY_SPANS = "SELECT first_span, last_span FROM applies WHERE idem=%s AND dest=%s AND flow=%s"
_INSERT_APPLY = (
    "INSERT INTO applies (idem, corr, dest, flow, first_at, last_at, applies, first_span, last_span) "
    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
_ADD_APPLY = "UPDATE applies SET applies=applies+1, last_at=%s, last_span=%s WHERE idem=%s AND dest=%s AND flow=%s"
_FENCE = "SELECT 1 FROM leader_lease WHERE name=%s AND holder=%s AND epoch=%s AND expires_at > now() FOR KEY SHARE"
_HAND_OFF = "INSERT INTO handoff (spans, events) VALUES (%s, %s)"
_DRAIN = (
    "DELETE FROM handoff WHERE id IN (SELECT id FROM handoff ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
    "RETURNING id, spans, events"
)
_REJECT = "INSERT INTO handoff_rejected (id, spans, events, reason) VALUES (%s, %s, %s, %s)"
_WRITABLE = "SELECT current_setting('transaction_read_only') = 'off'"
_OPEN_ROWS = "SELECT corr, dest, flow, source, changed_at, opened_at, deadline, timeline FROM open_tx"
_SWEEPS = (
    f"DELETE FROM closed_tx WHERE id IN (SELECT id FROM (SELECT id, closed_at FROM closed_tx ORDER BY id "
    f"LIMIT {SWEEP_BATCH}) AS oldest WHERE closed_at < %s)",
    f"DELETE FROM applies WHERE (idem, dest, flow) IN (SELECT idem, dest, flow FROM applies WHERE last_at < %s "
    f"LIMIT {SWEEP_BATCH})",
)


def closed_lookup_sql(n: int) -> str:
    """SELECT the closed rows of n keys, given as (corr, dest, flow, corr_hash) parameters."""
    return (
        "SELECT c.corr, c.dest, c.flow, outcome, closed_at, lag, changed_at, close_span, timeline "
        "FROM (VALUES " + ",".join(["(%s,%s,%s,%s::bigint)"] * n) + ") AS k(corr, dest, flow, h) "
        "JOIN closed_tx AS c ON c.corr_hash = k.h AND c.corr = k.corr AND c.dest = k.dest AND c.flow = k.flow"
    )


def _closed_key(key: TxKey) -> tuple[int, str, str, str]:
    return (corr_hash(key[0]), *key)


def resolve_dsn(pg: PostgresConfig | None) -> str:
    """The DSN from storage.postgresql.dsn_file or dsn_env (validated to hold one of them). It holds
    a password: it is never logged, and errors name the key, not the value."""
    if pg is None:
        raise ConfigError("storage.postgresql", "storage.backend is postgresql: set dsn_file or dsn_env")
    if pg.dsn_file is not None:
        try:
            dsn = pg.dsn_file.read_text().strip()
        except OSError as exc:
            raise ConfigError("storage.postgresql.dsn_file", f"cannot read {pg.dsn_file}: {exc.strerror}") from None
        if not dsn:
            raise ConfigError("storage.postgresql.dsn_file", f"{pg.dsn_file} is empty")
        return dsn
    assert pg.dsn_env is not None  # the model requires one of the two
    dsn = os.environ.get(pg.dsn_env, "").strip()
    if not dsn:
        raise ConfigError("storage.postgresql.dsn_env", f"environment variable {pg.dsn_env} is unset or empty")
    return dsn


class PostgresStore:
    """store.LedgerStore on PostgreSQL: connects, creates or checks the schema, reconnects after a
    lost connection at the next `begin` (so the ledger recovers without a restart)."""

    def __init__(self, config: Config):
        pg = config.storage.postgresql
        self.dsn = resolve_dsn(pg)
        assert pg is not None  # resolve_dsn refused None
        self.connect_timeout = max(1, round(pg.connect_timeout))
        self.statement_timeout_ms = int(pg.statement_timeout * 1000)
        self.lease_ttl = pg.lease_ttl
        self.conn: psycopg.Connection[Any] | None = None
        # (holder, epoch) of the lease term this process writes in; None: no replicas (see _fenced).
        self.fence: tuple[str, int] | None = None
        self.drained_rows = 0  # handoff rows the last drain_handoff took
        self.handoff_more = False  # it took as many as it could: more may wait
        self.rejected_spans = 0  # spans of handoff rows the last drain_handoff moved aside
        self.drain_rows = HANDOFF_DRAIN_ROWS  # rows drain_handoff takes (1 while isolating a bad one)
        self.drained_ids: list[int] = []  # the rows the last drain_handoff took
        try:
            self._connect()
        except psycopg.Error as exc:
            raise ConfigError("storage.postgresql", f"cannot connect to PostgreSQL: {_reason(exc)}") from None
        self._create_schema()

    def _connect(self) -> psycopg.Connection[Any]:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.conn = psycopg.connect(
            self.dsn,
            autocommit=True,  # transactions are explicit: begin/commit below
            connect_timeout=self.connect_timeout,
            options=f"-c statement_timeout={self.statement_timeout_ms}",
            application_name="syncwatch-ledger",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=self.statement_timeout_ms,  # a cut link fails the call instead of hanging
        )
        return self.conn

    def _c(self) -> psycopg.Connection[Any]:
        conn = self.conn
        if conn is None or conn.closed:
            conn = self._connect()
        return conn

    def _create_schema(self) -> None:
        conn = self._c()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))  # two starts at once
            version = self._schema_version(conn)
            if version is None:
                conn.execute(DDL)
                conn.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(PG_SCHEMA_VERSION),))
                log.info("ledger: created the PostgreSQL schema, version %d", PG_SCHEMA_VERSION)
            elif version < PG_SCHEMA_VERSION:
                log.info("ledger: migrating the PostgreSQL schema %d -> %d", version, PG_SCHEMA_VERSION)
                for step in range(version, PG_SCHEMA_VERSION):
                    conn.execute(MIGRATIONS[step])
                conn.execute("UPDATE meta SET value=%s WHERE key='schema_version'", (str(PG_SCHEMA_VERSION),))
            elif version > PG_SCHEMA_VERSION:
                raise RuntimeError(
                    f"the PostgreSQL ledger has schema version {version}, this syncwatch needs "
                    f"{PG_SCHEMA_VERSION}: run a newer syncwatch or another database"
                )
            if conn.execute("SELECT to_regclass('handoff_rejected')").fetchone() == (None,):
                conn.execute(REJECTED_DDL)  # only when missing: CREATE needs a privilege later starts lack

    @staticmethod
    def _schema_version(conn: psycopg.Connection[Any]) -> int | None:
        if conn.execute("SELECT to_regclass('meta')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    # ---- the write transaction -----------------------------------------------------------------
    def begin(self) -> None:
        conn = self._c()
        try:
            conn.execute("BEGIN")
            fenced = self._fenced(conn)
        except psycopg.Error:
            self._drop_broken()
            self.rollback()  # a failed check (a timeout) must not leave the transaction open
            raise
        if not fenced:
            conn.execute("ROLLBACK")
            raise StoreBusy("this replica's leader lease is over: another replica leads the ledger")

    def _fenced(self, conn: psycopg.Connection[Any]) -> bool:
        """Inside a transaction: True when this process still holds its lease term. The row lock
        (FOR KEY SHARE) holds off a new term, which deletes the row, until this transaction ends, so
        no commit of an old term lands after a new one began; the holder's renewals (a non-key
        UPDATE) go through meanwhile. Without a fence (one process, tools, tests): True."""
        fence = self.fence
        if fence is None:
            return True
        return conn.execute(_FENCE, (LEASE_NAME, *fence)).fetchone() is not None

    def commit(self) -> None:
        try:
            self._c().execute("COMMIT")
        except psycopg.Error:
            self._drop_broken()
            raise

    def rollback(self) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return  # a lost connection rolled the transaction back on the server
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                self._drop_broken()

    def _drop_broken(self) -> None:
        """After an error: a connection that is no longer usable is closed, the next call reconnects."""
        conn = self.conn
        if conn is not None and (conn.broken or conn.closed):
            conn.close()
            self.conn = None

    # ---- start ---------------------------------------------------------------------------------
    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        conn = self._c()
        try:
            with conn.transaction(), conn.cursor(name="ledger_load") as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(sql)
                yield from cur
        except psycopg.Error:
            self._drop_broken()
            raise

    def open_rows(self) -> Iterator[OpenRow]:
        new = tuple.__new__
        for row in self._stream(_OPEN_ROWS):
            yield new(OpenRow, row)

    def closed_hashes(self) -> Iterator[int]:
        for (h,) in self._stream("SELECT corr_hash FROM closed_tx"):
            yield h

    # ---- closed transactions -------------------------------------------------------------------
    def closed_rows(self, keys: Sequence[TxKey]) -> dict[TxKey, ClosedRow]:
        found: dict[TxKey, ClosedRow] = {}
        new = tuple.__new__
        conn = self._c()
        for i in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[i : i + LOOKUP_CHUNK]
            params = [v for key in chunk for v in (*key, corr_hash(key[0]))]
            for row in conn.execute(closed_lookup_sql(len(chunk)), params):
                found[row[:3]] = new(ClosedRow, row[3:])
        return found

    def closed_row(self, key: TxKey) -> ClosedRow | None:
        row = self._c().execute(_CLOSED_ROW, _closed_key(key)).fetchone()
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
        self._c().execute(_SET_CLOSED_SOURCE, (lag, changed_at, source, source_trace, source_span, *_closed_key(key)))

    def add_closed_attempt(self, key: TxKey, timeline: str) -> None:
        self._c().execute(_ADD_CLOSED_ATTEMPT, (timeline, *_closed_key(key)))

    def set_closed_timeline(self, key: TxKey, timeline: str) -> None:
        self._c().execute(_SET_CLOSED_TIMELINE, (timeline, *_closed_key(key)))

    # ---- applies of idempotency keys -----------------------------------------------------------
    def apply_spans(self, idem: str, dest: str, flow: str) -> tuple[bytes | None, bytes | None] | None:
        row = self._c().execute(_APPLY_SPANS, (idem, dest, flow)).fetchone()
        return None if row is None else (row[0], row[1])

    def insert_apply(self, idem: str, key: TxKey, at: float, span: bytes, applies: int) -> None:
        corr, dest, flow = key
        self._c().execute(_INSERT_APPLY, (idem, corr, dest, flow, at, at, applies, span, span))

    def add_apply(self, idem: str, dest: str, flow: str, at: float, span: bytes) -> None:
        self._c().execute(_ADD_APPLY, (at, span, idem, dest, flow))

    # ---- the batch -----------------------------------------------------------------------------
    def write_batch(self, writes: BatchWrites) -> None:
        # executemany runs in pipeline mode: a batch's statements go out without waiting per row.
        with self._c().cursor() as cur:
            if writes.closed_deletes:
                cur.executemany(_DELETE_CLOSED, [_closed_key(key) for key in writes.closed_deletes])
            if writes.stored_closes:
                cur.executemany(_CLOSE_STORED, list(writes.stored_closes.values()))
            if writes.open_deletes:
                cur.executemany(_DELETE_OPEN, writes.open_deletes)
            if writes.new_closes:
                cur.executemany(_CLOSE_NEW, list(writes.new_closes.values()))
            if writes.open_upserts:
                cur.executemany(_UPSERT_OPEN, writes.open_upserts)

    # ---- housekeeping --------------------------------------------------------------------------
    def sweep(self, cutoff: float) -> None:
        for sql in _SWEEPS:
            try:
                conn = self._c()
                for _ in range(SWEEP_ROUNDS):  # bounded, so the writer is back to intake quickly
                    with conn.transaction():
                        if not self._fenced(conn):
                            return  # no longer the leader: the writer finds out at its next batch
                        if conn.execute(sql, (cutoff,)).rowcount == 0:
                            break
            except psycopg.Error as exc:
                # Sweeping loses nothing when it fails; it only delays clean-up until the next minute.
                self._drop_broken()
                log.error("ledger sweep failed (will retry in a minute): %s", _reason(exc))

    # ---- replicas: the handoff of followers' spans to the leader ---------------------------------
    def hand_off(self, events: Sequence[Event]) -> None:
        """A follower's batch, durable in one transaction of its own (autocommit); raises when not."""
        try:
            self._c().execute(_HAND_OFF, (len(events), handoff.encode(events)))
        except psycopg.Error:
            self._drop_broken()
            raise

    def drain_handoff(self) -> list[Event]:
        """Inside the leader's write transaction: take (and delete) the oldest handed-off batches, so
        they are applied exactly once, with the batch that records them."""
        events: list[Event] = []
        conn = self._c()
        rows = conn.execute(_DRAIN, (self.drain_rows,)).fetchall()
        self.drained_ids = [row[0] for row in rows]
        self.rejected_spans = 0
        for row_id, spans, data in sorted(rows):
            try:
                events.extend(handoff.decode(data))
            except handoff.Undecodable as exc:
                # Moved aside in this transaction: it no longer blocks the rows behind it.
                conn.execute(_REJECT, (row_id, spans, data, str(exc)))
                self.rejected_spans += spans
                log.error(
                    "handoff row %d (%d spans) cannot be decoded (%s): moved to handoff_rejected, "
                    'counted in syncwatch_dropped_total{reason="handoff_rejected"}',
                    row_id,
                    spans,
                    exc,
                )
        self.drained_rows = len(rows)
        self.handoff_more = len(rows) == self.drain_rows
        return events

    def reject_handoff(self, row_id: int, reason: str) -> int:
        """Move one handoff row aside in a (fenced) transaction of its own: one the leader cannot
        apply (the database refuses its events). Its spans; 0 when another took it meanwhile."""
        self.begin()
        try:
            conn = self._c()
            row = conn.execute("DELETE FROM handoff WHERE id = %s RETURNING id, spans, events", (row_id,)).fetchone()
            if row is not None:
                conn.execute(_REJECT, (*row, reason))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return 0 if row is None else int(row[1])

    @staticmethod
    def transient(exc: BaseException) -> bool:
        """An error that says nothing about the data written: the database is away, slow, locked
        (psycopg.OperationalError: connection, timeouts, lock and serialization failures)."""
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, StoreBusy))

    def handoff_waiting(self) -> tuple[int, int]:
        """(batches, spans) in the handoff table now."""
        try:
            row = self._c().execute("SELECT count(*), coalesce(sum(spans), 0) FROM handoff").fetchone()
        except psycopg.Error:
            self._drop_broken()
            raise
        assert row is not None  # an aggregate always answers one row
        return int(row[0]), int(row[1])

    def writable(self) -> bool:
        """The database answers and accepts writes (not a read-only standby): readiness while idle."""
        try:
            row = self._c().execute(_WRITABLE).fetchone()
        except psycopg.Error:
            self._drop_broken()
            return False
        return row == (True,)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _reason(exc: psycopg.Error) -> str:
    """An error's first line; psycopg's messages name host and port, never the password."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
