"""Read-only queries of the correlation ledger for the query API: the timeline of one correlation ID
per destination, and the reconciliation lists (overdue, pending, failed, expired, duplicate).

Each call opens its own read-only connection (WAL: readers never block the ledger's writer thread
and see only committed transactions). Times are unix seconds here; the API formats them.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncwatch.ledger.schema import STAGE_CONFIRM, STAGE_FAIL, corr_hash

STATES = ("overdue", "pending", "failed", "expired", "duplicate")
MAX_PAGE = 1000


class BadCursor(ValueError):
    pass


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str, n: int) -> list[Any]:
    """[sort value, key columns...] as encode_cursor wrote them: a number (or null), then strings.
    Anything else is refused (BadCursor), before it reaches SQL."""
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise BadCursor("cursor is not one this API returned") from None
    if not isinstance(values, list) or len(values) != n:
        raise BadCursor("cursor is not one this API returned")
    first = values[0]
    if first is not None and not _is_number(first):
        raise BadCursor("cursor is not one this API returned")
    if isinstance(first, int) and not -(1 << 63) <= first < (1 << 63):  # SQLite's integer range
        raise BadCursor("cursor is not one this API returned")
    if not all(isinstance(v, str) for v in values[1:]):
        raise BadCursor("cursor is not one this API returned")
    return values


def _is_number(value: Any) -> bool:
    """An int or float that is not a bool and not NaN (infinities compare; NaN does not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _sort_key(value: Any) -> float:
    """A number to order by; what is not one (None, text, NaN) sorts last."""
    if not _is_number(value):
        return math.inf
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf if value > 0 else -math.inf


def _is_overdue(deadline: Any, now: float) -> bool:
    return _is_number(deadline) and deadline < now


def _overdue_seconds(deadline: Any, now: float) -> float | None:
    if not _is_number(deadline):
        return None
    try:
        return round(max(0.0, now - deadline), 3)
    except OverflowError:
        return None


class LedgerQueries:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None  # nothing recorded yet
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.row_factory = sqlite3.Row
        conn.create_function("syncwatch_corr_hash", 1, corr_hash, deterministic=True)
        return conn

    # -- one transaction -----------------------------------------------------------------------
    def timeline(self, corr: str) -> dict | None:
        """Everything the ledger knows about one correlation ID, per (destination, flow); None
        when it knows nothing."""
        conn = self._connect()
        if conn is None:
            return None
        try:
            open_rows = conn.execute("SELECT * FROM open_tx WHERE corr = ?", (corr,)).fetchall()
            closed_rows = conn.execute(
                "SELECT * FROM closed_tx WHERE corr_hash = ? AND corr = ?", (corr_hash(corr), corr)
            ).fetchall()
            applies = conn.execute("SELECT * FROM applies WHERE corr = ?", (corr,)).fetchall()
        finally:
            conn.close()
        if not (open_rows or closed_rows or applies):
            return None
        now = self.clock()
        dests: dict[tuple[str, str], dict] = {}
        for r in list(open_rows) + list(closed_rows):
            is_open = "outcome" not in r.keys()  # noqa: SIM118 -- `in` on a sqlite3.Row tests its values
            e = {
                "destination": r["dest"],
                "flow": r["flow"],
                "source": r["source"],
                "state": ("overdue" if _is_overdue(r["deadline"], now) else "pending") if is_open else r["outcome"],
                "outcome": None if is_open else r["outcome"],
                "changed_at": r["changed_at"],
                "opened_at": _col(r, "opened_at"),
                "deadline": _col(r, "deadline"),
                "closed_at": None if is_open else r["closed_at"],
                "lag_seconds": None if is_open else r["lag"],
                "source_span": _span_ref(_col(r, "source_trace"), _col(r, "source_span")),
                "attempt_count": r["attempts"],
                "applies": 0,
                "duplicate": False,
                "attempts": [],
                "confirmations": [],
                "failures": [],
            }
            _fill_timeline(e, _col(r, "timeline"))
            dests[(r["dest"], r["flow"])] = e
        for r in applies:
            found = dests.get((r["dest"], r["flow"]))
            if found is not None:
                found["applies"] += r["applies"]
                found["duplicate"] = found["duplicate"] or r["applies"] > 1
        return {
            "correlation_id": corr,
            "destinations": sorted(dests.values(), key=lambda e: (e["flow"], e["destination"])),
        }

    # -- cross-check for syncwatch.reconcile ----------------------------------------------------
    def states_of(self, flow: str, corrs: list[str]) -> dict[str, str]:
        """The ledger's state (pending, overdue, confirmed, failed, expired) of each of these correlation
        IDs in `flow`; IDs it never saw are absent. Several destinations: the least settled state wins."""
        conn = self._connect()
        if conn is None or not corrs:
            if conn is not None:
                conn.close()
            return {}
        now = self.clock()
        ids = json.dumps(corrs)
        rank = {"overdue": 0, "pending": 1, "failed": 2, "expired": 3, "confirmed": 4}
        out: dict[str, str] = {}
        try:
            rows = conn.execute(
                "SELECT corr, deadline FROM open_tx WHERE corr IN (SELECT value FROM json_each(?)) AND flow = ?",
                (ids, flow),
            ).fetchall()
            found = [(r[0], "overdue" if _is_overdue(r[1], now) else "pending") for r in rows]
            rows = conn.execute(
                "SELECT corr, outcome FROM closed_tx WHERE corr_hash IN (SELECT syncwatch_corr_hash(value) "
                "FROM json_each(?)) AND flow = ?",
                (ids, flow),
            ).fetchall()
            wanted = set(corrs)
            found += [(r[0], r[1]) for r in rows if r[0] in wanted]
        finally:
            conn.close()
        for corr, state in found:
            if corr not in out or rank.get(state, 9) < rank.get(out[corr], 9):
                out[corr] = state
        return out

    # -- reconciliation lists ------------------------------------------------------------------
    def reconciliation(
        self, state: str, flow: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict], str | None]:
        """One page of the list finance reconciles against, and the cursor of the next page."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        limit = max(1, min(MAX_PAGE, limit))
        conn = self._connect()
        if conn is None:
            if cursor:
                decode_cursor(cursor, 4)
            return [], None
        now = self.clock()
        where: list[str] = []
        params: list[Any] = []
        if state in ("overdue", "pending"):
            sql = "SELECT t.* FROM open_tx t"
            order_col, desc = "t.deadline", False
            if state == "overdue":
                where.append("t.deadline < ?")
                params.append(now)
        elif state in ("failed", "expired"):
            sql = "SELECT t.* FROM closed_tx t"
            order_col, desc = "t.closed_at", True
            where.append(
                "t.outcome = ? AND t.outcome <> 'confirmed'"
            )  # the second term lets SQLite use closed_tx_problems
            params.append(state)
        else:
            sql = (
                "SELECT t.*, (SELECT source FROM closed_tx c WHERE c.corr_hash = syncwatch_corr_hash(t.corr) "
                "AND c.corr = t.corr AND c.dest = t.dest AND c.flow = t.flow) AS source FROM applies t"
            )
            order_col, desc = "t.last_at", True
            where.append("t.applies > 1")
        if flow:
            where.append("t.flow = ?")
            params.append(flow)
        if cursor:
            after = decode_cursor(cursor, 4)
            where.append(f"({order_col}, t.corr, t.dest, t.flow) {'<' if desc else '>'} (?, ?, ?, ?)")
            params.extend(after)
        direction = "DESC" if desc else "ASC"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        sql += f" ORDER BY {order_col} {direction}, t.corr {direction}, t.dest {direction}, t.flow {direction} LIMIT ?"
        params.append(limit + 1)
        try:
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.close()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [self._item(state, r, now) for r in rows]
        next_cursor = None
        if more and rows:
            r = rows[-1]
            sort_value = {
                "overdue": "deadline",
                "pending": "deadline",
                "failed": "closed_at",
                "expired": "closed_at",
                "duplicate": "last_at",
            }[state]
            next_cursor = encode_cursor([r[sort_value], r["corr"], r["dest"], r["flow"]])
        return items, next_cursor

    @staticmethod
    def _item(state: str, r: sqlite3.Row, now: float) -> dict:
        item = {"correlation_id": r["corr"], "flow": r["flow"], "source": r["source"], "destination": r["dest"]}
        if state in ("overdue", "pending"):
            item.update(
                state="overdue" if _is_overdue(r["deadline"], now) else "pending",
                changed_at=r["changed_at"],
                opened_at=r["opened_at"],
                deadline=r["deadline"],
                overdue_seconds=_overdue_seconds(r["deadline"], now),
                attempts=r["attempts"],
                last_code=_last_code(_col(r, "timeline")),
            )
        elif state in ("failed", "expired"):
            item.update(
                state=r["outcome"],
                changed_at=r["changed_at"],
                closed_at=r["closed_at"],
                attempts=r["attempts"],
                last_code=_last_code(_col(r, "timeline")),
            )
        else:
            item.update(state="duplicate", applies=r["applies"], first_at=r["first_at"], last_at=r["last_at"])
        return item


def _col(row: sqlite3.Row, name: str) -> Any:
    return row[name] if name in row.keys() else None  # noqa: SIM118 -- `in` on a sqlite3.Row tests values


def _span_ref(trace_id: bytes | None, span_id: bytes | None) -> dict | None:
    if not span_id:
        return None
    return {"trace_id": (trace_id or b"").hex(), "span_id": span_id.hex()}


def _load_timeline(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _entries(value: Any, size: int) -> list[Any]:
    """The well-formed entries of a timeline list: lists of `size` fields (a malformed one is skipped)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, list) and len(v) == size]


def _backoff(start: Any, prev_end: Any) -> float | None:
    if not (_is_number(start) and _is_number(prev_end)):
        return None
    try:
        value = round(start - prev_end, 6)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _fill_timeline(e: dict, text: str | None) -> None:
    """Attempts, confirmation/failure and duplicate applies from a transaction's timeline JSON
    (layout in schema.py, entries in records.py). Values are passed on as stored; the API formats them."""
    tl = _load_timeline(text)
    for trace_id, span_id, start, end, n, code, error in _entries(tl.get("attempts"), 7):
        e["attempts"].append(
            {
                "attempt": n,
                "trace_id": trace_id,
                "span_id": span_id,
                "start": start,
                "end": end,
                "code": code,
                "error": error,
                "backoff_seconds": None,
            }
        )
    # SPEC: backoff = start of attempt n - end of attempt n-1 of the same transaction.
    e["attempts"].sort(key=lambda a: (_sort_key(a["attempt"] or 0), _sort_key(a["start"])))
    for prev, cur in zip(e["attempts"], e["attempts"][1:], strict=False):
        cur["backoff_seconds"] = _backoff(cur["start"], prev["end"])
    e["attempt_count"] = max(e["attempt_count"] or 0, len(e["attempts"]))
    close = tl.get("close")
    if isinstance(close, list) and len(close) == 7:
        stage, trace_id, span_id, start, end, error, idem = close
        span = {"trace_id": trace_id, "span_id": span_id, "start": start, "end": end}
        if stage == STAGE_CONFIRM:
            e["confirmations"].append({**span, "idempotency_key": idem, "duplicate": False})
        elif stage == STAGE_FAIL:
            e["failures"].append({**span, "error": error})
    for trace_id, span_id, start, end, idem in _entries(tl.get("duplicates"), 5):
        e["confirmations"].append(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "start": start,
                "end": end,
                "idempotency_key": idem,
                "duplicate": True,
            }
        )
    if e["confirmations"] and any(c["duplicate"] for c in e["confirmations"]):
        e["duplicate"] = True


def _last_code(text: str | None) -> str | None:
    attempts = _entries(_load_timeline(text).get("attempts"), 7)
    if not attempts:
        return None
    last = max(attempts, key=lambda a: (_sort_key(a[4] or 0), _sort_key(a[2])))
    return last[5]
