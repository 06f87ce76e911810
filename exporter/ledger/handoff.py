"""A follower's batch of events as one handoff row (postgres_store): a compact JSON list of event
lists in records.Event's field order, span IDs as hex. One row per batch rather than a row per span:
PostgreSQL's per-row cost (header, index entry, WAL record) is paid once per batch
(docs/performance.md, issue 16 part two)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import orjson

from syncwatch.ledger.records import EVENT_COLUMNS, Event
from syncwatch.ledger.schema import STAGE_NAMES, STAGE_SOURCE

_FIELDS = len(EVENT_COLUMNS)
_STAGES = frozenset(STAGE_NAMES.values())
_NUMBER = (int, float)


class Undecodable(ValueError):
    """A handoff row that is not a list of events as encode() writes them (its message holds no
    value from the row, so it can be logged)."""


def encode(events: Sequence[Event]) -> bytes:
    return orjson.dumps([(ev.trace_id.hex(), ev.span_id.hex(), *ev[2:]) for ev in events])


def decode(data: bytes) -> list[Event]:
    """The events of one handoff row; raises Undecodable for anything encode() did not write, so
    a corrupt row is refused here instead of failing the leader's transaction over and over."""
    new, fromhex, intern = tuple.__new__, bytes.fromhex, sys.intern
    out: list[Event] = []
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"not JSON ({exc.msg})") from None
    if not isinstance(rows, list):
        raise Undecodable("not a list of events")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != _FIELDS:
            raise Undecodable(f"event {i}: not a list of {_FIELDS} fields")
        trace, span, corr, flow, stage, source, dest, *rest = row
        start, end, changed_at, attempt, _code, _error, _idem, received = rest
        # The fields the ledger computes with or keys on, as extraction (intake/extract.py) sets them.
        if not (
            isinstance(trace, str)
            and isinstance(span, str)
            and isinstance(corr, str)
            and isinstance(flow, str)
            and isinstance(source, str | None)
            and isinstance(dest, str | None)
            and type(stage) is int
            and stage in _STAGES
            and isinstance(start, _NUMBER)
            and isinstance(end, _NUMBER)
            and isinstance(received, _NUMBER)
            and (isinstance(changed_at, _NUMBER) or (changed_at is None and stage != STAGE_SOURCE))
            and (dest is not None or stage == STAGE_SOURCE)
            and (attempt is None or type(attempt) is int)
        ):
            raise Undecodable(f"event {i}: a field of the wrong type")
        try:
            trace_id, span_id = fromhex(trace), fromhex(span)
        except ValueError:
            raise Undecodable(f"event {i}: a trace or span ID that is not hex") from None
        out.append(
            new(
                Event,
                (
                    trace_id,
                    span_id,
                    corr,
                    intern(flow),
                    stage,
                    intern(source) if source is not None else None,
                    intern(dest) if dest is not None else None,
                    *rest,
                ),
            )
        )
    return out
