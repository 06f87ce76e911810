"""What the ledger's readers answer, whichever backend holds the rows: the timeline of one correlation
ID, the items of the reconciliation lists and their keyset cursors. A backend only fetches rows (as
dicts of the tables' columns); everything that shapes an answer is here, so SQLite and PostgreSQL
give the same JSON, the same order and the same cursors.

Times are unix seconds here; the API formats them.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from syncwatch.ledger.schema import STAGE_CONFIRM, STAGE_FAIL

STATES: Final = ("overdue", "pending", "failed", "expired", "duplicate")
MAX_PAGE: Final = 1000

Row = Mapping[str, Any]

# The column each list is ordered by (then corr, dest, flow), and whether newest first.
SORT_COLUMN: Final = {
    "overdue": "deadline",
    "pending": "deadline",
    "failed": "closed_at",
    "expired": "closed_at",
    "duplicate": "last_at",
}
DESCENDING: Final = frozenset({"failed", "expired", "duplicate"})

# Several destinations of one correlation ID: the least settled state is the one reported.
_RANK: Final = {"overdue": 0, "pending": 1, "failed": 2, "expired": 3, "confirmed": 4}


class BadCursor(ValueError):
    pass


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str, n: int) -> list[Any]:
    """[sort value, key columns...] as encode_cursor wrote them: a number (or null), then strings.
    Anything else is refused (BadCursor), before it reaches SQL. Strings hold text every backend
    can store: no NUL character (PostgreSQL's text cannot) and no lone surrogate (not UTF-8)."""
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
    if not all(isinstance(v, str) and _storable(v) for v in values[1:]):
        raise BadCursor("cursor is not one this API returned")
    return values


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def next_cursor(state: str, row: Row) -> str:
    """The cursor of the page after the one that ends with `row`."""
    return encode_cursor([row[SORT_COLUMN[state]], row["corr"], row["dest"], row["flow"]])


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


def is_overdue(deadline: Any, now: float) -> bool:
    return _is_number(deadline) and deadline < now


def _overdue_seconds(deadline: Any, now: float) -> float | None:
    if not _is_number(deadline):
        return None
    try:
        return round(max(0.0, now - deadline), 3)
    except OverflowError:
        return None


# -- one transaction ---------------------------------------------------------------------------
def timeline_record(
    corr: str, open_rows: Iterable[Row], closed_rows: Iterable[Row], apply_rows: Iterable[Row], now: float
) -> dict[str, Any] | None:
    """Everything the ledger knows about one correlation ID, per (destination, flow), from its rows
    in open_tx, closed_tx (closed rows replace open ones of the same key) and applies; None when
    there are none."""
    rows = [(r, True) for r in open_rows] + [(r, False) for r in closed_rows]
    applies = list(apply_rows)
    if not (rows or applies):
        return None
    dests: dict[tuple[str, str], dict[str, Any]] = {}
    for r, is_open in rows:
        e: dict[str, Any] = {
            "destination": r["dest"],
            "flow": r["flow"],
            "source": r["source"],
            "state": ("overdue" if is_overdue(r["deadline"], now) else "pending") if is_open else r["outcome"],
            "outcome": None if is_open else r["outcome"],
            "changed_at": r["changed_at"],
            "opened_at": r["opened_at"],
            "deadline": r["deadline"],
            "closed_at": None if is_open else r["closed_at"],
            "lag_seconds": None if is_open else r["lag"],
            "source_span": _span_ref(r["source_trace"], r["source_span"]),
            "attempt_count": r["attempts"],
            "applies": 0,
            "duplicate": False,
            "attempts": [],
            "confirmations": [],
            "failures": [],
        }
        _fill_timeline(e, r["timeline"])
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


# -- cross-check for syncwatch.reconcile -------------------------------------------------------
def least_settled(
    open_rows: Iterable[tuple[str, Any]], closed_rows: Iterable[tuple[str, str]], now: float
) -> dict[str, str]:
    """Each correlation ID's state from its (corr, deadline) open rows and (corr, outcome) closed
    rows; with several destinations the least settled state wins."""
    found = [(corr, "overdue" if is_overdue(deadline, now) else "pending") for corr, deadline in open_rows]
    found += list(closed_rows)
    out: dict[str, str] = {}
    for corr, state in found:
        if corr not in out or _RANK.get(state, 9) < _RANK.get(out[corr], 9):
            out[corr] = state
    return out


# -- reconciliation lists ----------------------------------------------------------------------
def list_item(state: str, r: Row, now: float) -> dict[str, Any]:
    """One item of a reconciliation list from its row (for duplicates: an applies row plus the
    `source` of its closed transaction, None when there is none)."""
    item: dict[str, Any] = {
        "correlation_id": r["corr"],
        "flow": r["flow"],
        "source": r["source"],
        "destination": r["dest"],
    }
    if state in ("overdue", "pending"):
        item.update(
            state="overdue" if is_overdue(r["deadline"], now) else "pending",
            changed_at=r["changed_at"],
            opened_at=r["opened_at"],
            deadline=r["deadline"],
            overdue_seconds=_overdue_seconds(r["deadline"], now),
            attempts=r["attempts"],
            last_code=_last_code(r["timeline"]),
        )
    elif state in ("failed", "expired"):
        item.update(
            state=r["outcome"],
            changed_at=r["changed_at"],
            closed_at=r["closed_at"],
            attempts=r["attempts"],
            last_code=_last_code(r["timeline"]),
        )
    else:
        item.update(state="duplicate", applies=r["applies"], first_at=r["first_at"], last_at=r["last_at"])
    return item


def timeline_records(
    corrs: Iterable[str], open_rows: Iterable[Row], closed_rows: Iterable[Row], apply_rows: Iterable[Row], now: float
) -> dict[str, dict[str, Any]]:
    """timeline_record of each of these correlation IDs the ledger knows, from their rows read
    together (rows of other IDs, e.g. closed rows found by a shared corr_hash, are left out)."""
    wanted = set(corrs)
    found: dict[str, tuple[list[Row], list[Row], list[Row]]] = {}
    for kind, rows in enumerate((open_rows, closed_rows, apply_rows)):
        for r in rows:
            corr = r["corr"]
            if corr in wanted:
                found.setdefault(corr, ([], [], []))[kind].append(r)
    out: dict[str, dict[str, Any]] = {}
    for corr, (opened, closed, applies) in found.items():
        record = timeline_record(corr, opened, closed, applies, now)
        if record is not None:
            out[corr] = record
    return out


def check_list_args(state: str, limit: int) -> int:
    """The page size in force; a state that is no list raises ValueError."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    return max(1, min(MAX_PAGE, limit))


# -- timelines (layout in schema.py, entries in records.py) ------------------------------------
def _span_ref(trace_id: bytes | None, span_id: bytes | None) -> dict[str, str] | None:
    if not span_id:
        return None
    return {"trace_id": (trace_id or b"").hex(), "span_id": span_id.hex()}


def _load_timeline(text: str | None) -> dict[str, Any]:
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


def _fill_timeline(e: dict[str, Any], text: str | None) -> None:
    """Attempts, confirmation/failure and duplicate applies from a transaction's timeline JSON.
    Values are passed on as stored; the API formats them."""
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
    code: str | None = last[5]
    return code
