"""The ledger's reader (reader.LedgerReader) on the embedded SQLite file.

Each call opens its own read-only connection (WAL: readers never block the ledger's writer thread
and see only committed transactions). Rows go to read_model.py, which shapes the answers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


class LedgerQueries:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection, None when there is no ledger file yet (nothing recorded). A
        locked or unreadable file raises LedgerUnavailable."""
        if not self.path.exists():
            yield None
            return
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        except sqlite3.OperationalError as exc:
            raise LedgerUnavailable(f"the ledger cannot be read: SQLite: {exc}") from None
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.row_factory = sqlite3.Row
            conn.create_function("corr_hash_of", 1, corr_hash, deterministic=True)
            yield conn
        except sqlite3.OperationalError as exc:  # locked for longer than busy_timeout, I/O error
            raise LedgerUnavailable(f"the ledger cannot be read: SQLite: {exc}") from None
        finally:
            conn.close()

    # -- one transaction -----------------------------------------------------------------------
    def timeline(self, corr: str) -> dict[str, Any] | None:
        with self._connection() as conn:
            if conn is None:
                return None
            open_rows = _dicts(conn.execute("SELECT * FROM open_tx WHERE corr = ?", (corr,)))
            closed_rows = _dicts(
                conn.execute("SELECT * FROM closed_tx WHERE corr_hash = ? AND corr = ?", (corr_hash(corr), corr))
            )
            applies = _dicts(conn.execute("SELECT * FROM applies WHERE corr = ?", (corr,)))
        return timeline_record(corr, open_rows, closed_rows, applies, self.clock())

    def timelines(self, corrs: list[str]) -> dict[str, dict[str, Any]]:
        if not corrs:
            return {}
        ids = json.dumps(list(dict.fromkeys(corrs)))
        with self._connection() as conn:
            if conn is None:
                return {}
            open_rows = _dicts(
                conn.execute("SELECT * FROM open_tx WHERE corr IN (SELECT value FROM json_each(?))", (ids,))
            )
            closed_rows = _dicts(
                conn.execute(
                    "SELECT * FROM closed_tx WHERE corr_hash IN (SELECT corr_hash_of(value) FROM json_each(?))",
                    (ids,),
                )
            )
            applies = _dicts(
                conn.execute("SELECT * FROM applies WHERE corr IN (SELECT value FROM json_each(?))", (ids,))
            )
        return timeline_records(corrs, open_rows, closed_rows, applies, self.clock())

    # -- cross-check for syncwatch.reconcile ----------------------------------------------------
    def states_of(self, flow: str, corrs: list[str]) -> dict[str, str]:
        if not corrs:
            return {}
        ids = json.dumps(corrs)
        with self._connection() as conn:
            if conn is None:
                return {}
            now = self.clock()
            open_rows = conn.execute(
                "SELECT corr, deadline FROM open_tx WHERE corr IN (SELECT value FROM json_each(?)) AND flow = ?",
                (ids, flow),
            ).fetchall()
            closed_rows = conn.execute(
                "SELECT corr, outcome FROM closed_tx WHERE corr_hash IN (SELECT corr_hash_of(value) "
                "FROM json_each(?)) AND flow = ?",
                (ids, flow),
            ).fetchall()
        wanted = set(corrs)
        return least_settled(
            ((r[0], r[1]) for r in open_rows), ((r[0], r[1]) for r in closed_rows if r[0] in wanted), now
        )

    # -- reconciliation lists ------------------------------------------------------------------
    def reconciliation(
        self, state: str, flow: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = check_list_args(state, limit)
        after = decode_cursor(cursor, 4) if cursor else None
        with self._connection() as conn:
            if conn is None:
                return [], None
            now = self.clock()
            where: list[str] = []
            params: list[Any] = []
            order_col = "t." + SORT_COLUMN[state]
            if state in ("overdue", "pending"):
                sql = "SELECT t.* FROM open_tx t"
                desc = False
                if state == "overdue":
                    where.append("t.deadline < ?")
                    params.append(now)
            elif state in ("failed", "expired"):
                sql = "SELECT t.* FROM closed_tx t"
                desc = True
                # the second term lets SQLite use closed_tx_problems
                where.append("t.outcome = ? AND t.outcome <> 'confirmed'")
                params.append(state)
            else:
                sql = (
                    "SELECT t.*, (SELECT source FROM closed_tx c WHERE c.corr_hash = corr_hash_of(t.corr) "
                    "AND c.corr = t.corr AND c.dest = t.dest AND c.flow = t.flow) AS source FROM applies t"
                )
                desc = True
                where.append("t.applies > 1")
            if flow:
                where.append("t.flow = ?")
                params.append(flow)
            if after is not None:
                where.append(f"({order_col}, t.corr, t.dest, t.flow) {'<' if desc else '>'} (?, ?, ?, ?)")
                params.extend(after)
            direction = "DESC" if desc else "ASC"
            sql += (" WHERE " + " AND ".join(where)) if where else ""
            sql += (
                f" ORDER BY {order_col} {direction}, t.corr {direction}, t.dest {direction}, t.flow {direction} LIMIT ?"
            )
            params.append(limit + 1)
            rows = _dicts(conn.execute(sql, params))
        more = len(rows) > limit
        rows = rows[:limit]
        items = [list_item(state, r, now) for r in rows]
        return items, (next_cursor(state, rows[-1]) if more and rows else None)


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(zip(row.keys(), row, strict=True)) for row in cursor.fetchall()]
