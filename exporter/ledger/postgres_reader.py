"""The ledger's reader (reader.LedgerReader) on PostgreSQL: the same answers as the SQLite reader,
from the tables postgres_store.py writes.

One connection per call, opened and closed by it. Reads come from people (the API, the web view)
and from reconcilers once per page of IDs, not from the ingest path: a connection costs a few
milliseconds here (docs/performance.md), and a fresh one never holds a link to a server that has
restarted or failed over, so recovery needs no pool health checks. Every transaction is READ ONLY
(REPEATABLE READ: the three tables of a timeline are read at one instant) and bounded by
storage.postgresql.statement_timeout.

Ordering matches SQLite's: text keys compare by code point (COLLATE "C", like SQLite's BINARY), and
the sort columns are NOT NULL, so NULL ordering never differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from syncwatch.config.models import Config
from syncwatch.ledger.postgres_store import resolve_dsn
from syncwatch.ledger.read_model import (
    SORT_COLUMN,
    check_list_args,
    decode_cursor,
    least_settled,
    list_item,
    next_cursor,
    timeline_record,
    timeline_records,
)
from syncwatch.ledger.reader import LedgerUnavailable
from syncwatch.ledger.schema import corr_hash

_OPEN_COLS = "corr, dest, flow, source, changed_at, opened_at, deadline, source_trace, source_span, attempts, timeline"
_CLOSED_COLS = (
    "corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, lag, source_trace, source_span, "
    "attempts, timeline"
)
_APPLY_COLS = "idem, corr, dest, flow, first_at, last_at, applies"
_C = ' COLLATE "C"'
# The source of each duplicate's closed transaction, looked up by corr_hash as the writer does.
_SOURCES = (
    "SELECT k.corr, k.dest, k.flow, c.source FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) "
    "AS k(corr, dest, flow, h) JOIN closed_tx AS c ON c.corr_hash = k.h AND c.corr = k.corr AND c.dest = k.dest "
    "AND c.flow = k.flow"
)


# Errors of the database, not of the query: connection lost or refused, a timeout, a server shutting
# down or out of resources, a read-only or privilege refusal. Others (a syntax error, bad data) are
# bugs and propagate as such.
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.InternalError,
    psycopg.errors.InsufficientPrivilege,
)


class PostgresQueries:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time):
        pg = config.storage.postgresql
        self.dsn = resolve_dsn(pg)  # a missing DSN fails at start, naming the key
        assert pg is not None  # resolve_dsn refused None
        self.connect_timeout = max(1, round(pg.connect_timeout))
        self.statement_timeout_ms = max(1, int(pg.statement_timeout * 1000))
        self.clock = clock

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]] | None]:
        """A read-only transaction on a connection of its own; None while the schema does not exist
        yet (nothing recorded). A database that cannot answer raises LedgerUnavailable."""
        try:
            conn = psycopg.connect(
                self.dsn,
                connect_timeout=self.connect_timeout,
                options=f"-c statement_timeout={self.statement_timeout_ms}",
                application_name="syncwatch-reader",
                tcp_user_timeout=self.statement_timeout_ms,  # a cut link fails the call instead of hanging
                row_factory=dict_row,
            )
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from None
        # Sent with the BEGIN (no round trip of its own): BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY.
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with conn.transaction():
                if conn.execute("SELECT to_regclass('applies') IS NOT NULL AS ready").fetchone() == {"ready": False}:
                    yield None
                else:
                    yield conn
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from None
        finally:
            conn.close()

    # -- one transaction -----------------------------------------------------------------------
    def timeline(self, corr: str) -> dict[str, Any] | None:
        if "\x00" in corr:
            return None  # PostgreSQL's text cannot hold it: no transaction has this ID
        with self._transaction() as conn:
            if conn is None:
                return None
            open_rows = conn.execute(f"SELECT {_OPEN_COLS} FROM open_tx WHERE corr = %s", (corr,)).fetchall()
            closed_rows = conn.execute(
                f"SELECT {_CLOSED_COLS} FROM closed_tx WHERE corr_hash = %s AND corr = %s", (corr_hash(corr), corr)
            ).fetchall()
            applies = conn.execute(f"SELECT {_APPLY_COLS} FROM applies WHERE corr = %s", (corr,)).fetchall()
        return timeline_record(corr, open_rows, closed_rows, applies, self.clock())

    def timelines(self, corrs: list[str]) -> dict[str, dict[str, Any]]:
        ids = [c for c in dict.fromkeys(corrs) if "\x00" not in c]  # text cannot hold NUL: unknown
        if not ids:
            return {}
        with self._transaction() as conn:
            if conn is None:
                return {}
            open_rows = conn.execute(
                f"SELECT {_OPEN_COLS} FROM open_tx WHERE corr = ANY(%s::text[])", (ids,)
            ).fetchall()
            closed_rows = conn.execute(
                f"SELECT {_CLOSED_COLS} FROM closed_tx WHERE corr_hash = ANY(%s::bigint[])",
                (sorted({corr_hash(c) for c in ids}),),
            ).fetchall()
            applies = conn.execute(f"SELECT {_APPLY_COLS} FROM applies WHERE corr = ANY(%s::text[])", (ids,)).fetchall()
        return timeline_records(ids, open_rows, closed_rows, applies, self.clock())

    # -- cross-check for syncwatch.reconcile ----------------------------------------------------
    def states_of(self, flow: str, corrs: list[str]) -> dict[str, str]:
        ids = [c for c in dict.fromkeys(corrs) if "\x00" not in c]
        if not ids:
            return {}
        with self._transaction() as conn:
            if conn is None:
                return {}
            now = self.clock()
            open_rows = conn.execute(
                "SELECT corr, deadline FROM open_tx WHERE corr = ANY(%s::text[]) AND flow = %s", (ids, flow)
            ).fetchall()
            closed_rows = conn.execute(
                "SELECT corr, outcome FROM closed_tx WHERE corr_hash = ANY(%s::bigint[]) AND flow = %s",
                (sorted({corr_hash(c) for c in ids}), flow),
            ).fetchall()
        wanted = set(ids)
        return least_settled(
            ((r["corr"], r["deadline"]) for r in open_rows),
            ((r["corr"], r["outcome"]) for r in closed_rows if r["corr"] in wanted),
            now,
        )

    # -- reconciliation lists ------------------------------------------------------------------
    def reconciliation(
        self, state: str, flow: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = check_list_args(state, limit)
        after = decode_cursor(cursor, 4) if cursor else None
        if flow is not None and "\x00" in flow:
            return [], None  # no flow has this name
        with self._transaction() as conn:
            if conn is None:
                return [], None
            now = self.clock()
            rows = conn.execute(*_list_query(state, flow, limit + 1, after, now)).fetchall()
            if state == "duplicate" and rows:
                sources = conn.execute(
                    _SOURCES,
                    (
                        [r["corr"] for r in rows],
                        [r["dest"] for r in rows],
                        [r["flow"] for r in rows],
                        [corr_hash(r["corr"]) for r in rows],
                    ),
                ).fetchall()
                found = {(s["corr"], s["dest"], s["flow"]): s["source"] for s in sources}
                for r in rows:
                    r["source"] = found.get((r["corr"], r["dest"], r["flow"]))
        more = len(rows) > limit
        rows = rows[:limit]
        items = [list_item(state, r, now) for r in rows]
        return items, (next_cursor(state, rows[-1]) if more and rows else None)


def _list_query(state: str, flow: str | None, n: int, after: list[Any] | None, now: float) -> tuple[str, list[Any]]:
    """SELECT one page of a list: the same rows, in the same order, as the SQLite reader's query."""
    col = "t." + SORT_COLUMN[state]
    where: list[str] = []
    params: list[Any] = []
    if state in ("overdue", "pending"):
        sql, desc = f"SELECT {_OPEN_COLS} FROM open_tx t", False
        if state == "overdue":
            where.append("t.deadline < %s")
            params.append(now)
    elif state in ("failed", "expired"):
        sql, desc = f"SELECT {_CLOSED_COLS} FROM closed_tx t", True
        where.append("t.outcome = %s AND t.outcome <> 'confirmed'")  # closed_tx_problems' predicate
        params.append(state)
    else:
        sql, desc = f"SELECT {_APPLY_COLS} FROM applies t", True
        where.append("t.applies > 1")  # applies_duplicates' predicate
    if flow:
        where.append("t.flow = %s")
        params.append(flow)
    if after is not None:
        # PostgreSQL starts the index scan at the cursor's sort value (a row comparison's leading
        # column is an index condition), so a deep page costs what a first one does.
        first = None if after[0] is None else float(after[0])
        where.append(f"({col}, t.corr{_C}, t.dest{_C}, t.flow{_C}) {'<' if desc else '>'} (%s, %s, %s, %s)")
        params += [first, *after[1:]]
    direction = " DESC" if desc else ""
    sql += (" WHERE " + " AND ".join(where)) if where else ""
    sql += f" ORDER BY {col}{direction}, t.corr{_C}{direction}, t.dest{_C}{direction}, t.flow{_C}{direction} LIMIT %s"
    params.append(n)
    return sql, params


def _unavailable(exc: Exception) -> LedgerUnavailable:
    """The error a caller shows: its first line (psycopg names host and port, never the password)."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, psycopg.errors.QueryCanceled):
        reason = f"no answer within storage.postgresql.statement_timeout ({reason})"
    return LedgerUnavailable(f"the ledger cannot be read: PostgreSQL: {reason}")
