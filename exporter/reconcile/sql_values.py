"""Values the `sql` reconciler reads back: IDs and times checked column by column, and the
window placeholders rewritten to each driver's style. A bad value is a counted bad_result.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from syncwatch.reconcile.base import DestinationRow, ReconcileError, SourceRow
from syncwatch.reconcile.sql_settings import MAX_ID_CHARS, PARAM


def id_text(value: Any, column: str, side: str) -> str:
    if isinstance(value, str):
        if 0 < len(value) <= MAX_ID_CHARS:
            return value
        raise ReconcileError(
            "bad_result", f"{side} query: column {column} holds an empty text or one over {MAX_ID_CHARS} characters"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    shown = "NULL" if value is None else type(value).__name__
    raise ReconcileError(
        "bad_result", f"{side} query: column {column} returned {shown}, not an ID (an integer, text or UUID)"
    )


def epoch(value: Any, tz: ZoneInfo, column: str, side: str, nullable: bool = False, text: bool = False) -> float | None:
    if text and isinstance(value, str):  # SQLite keeps times as text (ISO 8601) as often as numbers
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ReconcileError(
                "bad_result", f"{side} query: column {column} holds text that is not an ISO 8601 time"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=tz).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if value is None and nullable:
        return None
    shown = "NULL" if value is None else type(value).__name__
    raise ReconcileError("bad_result", f"{side} query: column {column} returned {shown}, not a timestamp")


def positional(query: str, style: Literal["postgresql", "mysql", "sqlite"], first: int = 1) -> tuple[str, list[str]]:
    """`:window_start`/`:window_end` as the driver's placeholders; returns the SQL and the order of names."""
    order: list[str] = []
    if style == "mysql":
        query = query.replace("%", "%%")  # the driver formats the query with %: a LIKE 'a%' stays literal

    def sub(m: re.Match[str]) -> str:
        if style != "postgresql":
            order.append(m.group(1))
            return "%s" if style == "mysql" else "?"
        if m.group(1) not in order:
            order.append(m.group(1))
        return f"${first + order.index(m.group(1))}"

    return PARAM.sub(sub, query), order


def as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def source_rows(rows: list[tuple[Any, ...]], tz: ZoneInfo, text: bool = False) -> list[SourceRow]:
    page: list[SourceRow] = []
    for row in rows:
        if len(row) != 2:
            raise ReconcileError("bad_result", "source query: expected the columns id and changed_at")
        changed = epoch(row[1], tz, "changed_at", "source", text=text)
        assert changed is not None
        page.append(SourceRow(id_text(row[0], "id", "source"), changed))
    return page


def destination_rows(rows: list[tuple[Any, ...]], tz: ZoneInfo, text: bool = False) -> list[DestinationRow]:
    out = []
    for row in rows:
        if len(row) != 3:
            raise ReconcileError("bad_result", "destination query: expected the columns id, record_id and arrived_at")
        out.append(
            DestinationRow(
                id_text(row[0], "id", "destination"),
                id_text(row[1], "record_id", "destination"),
                epoch(row[2], tz, "arrived_at", "destination", nullable=True, text=text),
            )
        )
    return out
