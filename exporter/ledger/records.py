"""The ledger's record types: the event extraction hands over, a closed timeline's duplicates and
the rows the store gives back are NamedTuples (as prometheus_client's samples.py), read by name; the
timeline's attempts and close (stored as JSON lists) and the rows handed to the store to write are
typed tuples in field order (see below).

On the hot path they are built with `tuple.__new__(Type, values)`, a C call, not `Type(...)`, whose
generated `__new__` is a Python function (docs/performance.md, "Ledger records and storage interface").
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict

import orjson

# A transaction: (correlation ID, destination, flow). A plain tuple: one is built per event.
TxKey = tuple[str, str, str]
# A transaction's (flow, source, destination), one shared tuple per distinct value; source may be "unknown".
TxLabels = tuple[str, str, str]


class Event(NamedTuple):
    """One stage span as the ledger records it (built by intake/extract.py, one per stage span)."""

    trace_id: bytes
    span_id: bytes
    corr: str
    flow: str
    stage: int  # schema.STAGE_*
    source: str | None
    dest: str | None  # None only on a source span that names no destination
    start: float
    end: float
    changed_at: float | None  # syncwatch.source.changed_at (a source span's start when unset)
    attempt: int | None  # attempt number from http.request.resend_count (1 = first try), attempts only
    code: str | None  # response code, attempts only
    error: str | None  # error.type, attempts and closes
    idem: str | None  # idempotency key, closes only
    received: float  # when syncwatch received the request


EVENT_COLUMNS = Event._fields


# Timeline entries written on every close are plain tuples, like the rows below: orjson encodes a
# tuple as the JSON list it is stored as, a NamedTuple only through a Python call per entry.
# A delivery attempt: (trace_id, span_id, start, end, n, code, error); IDs lowercase hex, n the
# attempt number (1 = first try).
Attempt = tuple[str, str, float, float, int, str | None, str | None]
# The span that closed a transaction: (stage, trace_id, span_id, start, end, error, idem).
Close = tuple[int, str, str, float, float, str | None, str | None]


class Duplicate(NamedTuple):
    """A second or later apply of a closed transaction; stored as [trace_id, span_id, start, end, idem]."""

    trace_id: str
    span_id: str
    start: float
    end: float
    idem: str | None


class Timeline(TypedDict, total=False):
    """A transaction's timeline document (schema.py): entries are lists once read back from JSON."""

    attempts: list[Any]  # Attempt, or its list form when read from the store
    omitted: int  # attempts dropped from the middle of a capped timeline
    close: Close | list[Any]
    duplicates: list[Any]
    duplicates_omitted: int


class ClosedRow(NamedTuple):
    """What the transitions need of a closed transaction."""

    outcome: str  # confirmed | failed | expired
    closed_at: float
    lag: float | None
    changed_at: float | None
    close_span: bytes | None
    timeline: str | None  # JSON


class OpenRow(NamedTuple):
    """An open transaction as the store gives it back at start (load)."""

    corr: str
    dest: str
    flow: str
    source: str | None
    changed_at: float | None
    opened_at: float
    deadline: float
    timeline: str | None


# Rows the transitions hand the store to write: plain tuples in column order, typed but not named.
# One or two are built per transaction and bound to SQL parameters as they are; NamedTuples cost
# measurably more here (docs/performance.md, "Ledger records and storage interface").
OPEN_TX_COLUMNS = (
    "corr", "dest", "flow", "source", "changed_at", "opened_at", "deadline", "source_trace", "source_span",
    "attempts", "timeline",
)  # fmt: skip
# An open transaction to insert or update (source and source span only fill what is unset).
OpenTxRow = tuple[
    str, str, str, str | None, float | None, float, float, bytes | None, bytes | None, int, str | None
]  # fmt: skip
CLOSED_TX_COLUMNS = (
    "corr", "dest", "flow", "source", "outcome", "changed_at", "opened_at", "deadline", "closed_at", "lag",
    "source_trace", "source_span", "close_span", "attempts", "timeline", "corr_hash",
)  # fmt: skip
# A closed transaction that was never stored as open: the whole row.
ClosedTxRow = tuple[
    str, str, str, str | None, str, float | None, float | None, float | None, float, float | None,
    bytes | None, bytes | None, bytes | None, int, str | None, int,
]  # fmt: skip
STORED_CLOSE_COLUMNS = (
    "source", "outcome", "changed_at", "closed_at", "lag", "close_span", "attempts", "timeline", "corr_hash",
    "corr", "dest", "flow",
)  # fmt: skip
# The close of a transaction stored as open: its open row moves to the closed rows with these values.
StoredClose = tuple[
    str | None, str, float | None, float, float | None, bytes | None, int, str | None, int, str, str, str
]  # fmt: skip


def to_json(doc: Timeline) -> str:
    """A timeline as stored. orjson: it is encoded on every close, on the hot path (~10x json).
    It does not take tuple subclasses itself: a Duplicate goes through `default` as a list."""
    return orjson.dumps(doc, default=list).decode()


def attempts_of(entries: list[Any]) -> list[Attempt]:
    """Attempt entries read back from JSON (lists), as Attempts."""
    return [tuple(a) for a in entries]  # a stored attempt list has the layout of an Attempt
