"""A follower's batch of events as one handoff row (postgres_store): a compact JSON list of event
lists in records.Event's field order, span IDs as hex. One row per batch rather than a row per span:
PostgreSQL's per-row cost (header, index entry, WAL record) is paid once per batch
(docs/performance.md, issue 16 part two)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import orjson

from syncwatch.ledger.records import EVENT_COLUMNS, Event
from syncwatch.ledger.schema import STAGE_NAMES

_FIELDS = len(EVENT_COLUMNS)
_STAGES = frozenset(STAGE_NAMES.values())


class Undecodable(ValueError):
    """A handoff row that is not a list of events as encode() writes them (its message holds no
    value from the row, so it can be logged)."""


def encode(events: Sequence[Event]) -> bytes:
    return orjson.dumps([(ev.trace_id.hex(), ev.span_id.hex(), *ev[2:]) for ev in events])


def decode(data: bytes) -> list[Event]:
    """The events of one handoff row; raises Undecodable for a row encode() did not write (its
    shape, IDs, names or stage), so a corrupt row is refused here instead of failing the leader's
    transaction over and over. Values of the wrong type that get through fail the transaction
    that applies them: the leader then isolates the row (intake/replica.py)."""
    new, fromhex, intern, stages, fields = tuple.__new__, bytes.fromhex, sys.intern, _STAGES, _FIELDS
    out: list[Event] = []
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"not JSON ({exc.msg})") from None
    if rows.__class__ is not list:
        raise Undecodable("not a list of events")
    for i, row in enumerate(rows):
        if row.__class__ is not list or len(row) != fields:
            raise Undecodable(f"event {i}: not a list of {fields} fields")
        trace, span, corr, flow, stage, source, dest, *rest = row
        if stage not in stages or corr.__class__ is not str:
            raise Undecodable(f"event {i}: an unknown stage or a correlation ID that is not text")
        try:
            ev = new(
                Event,
                (
                    fromhex(trace),
                    fromhex(span),
                    corr,
                    intern(flow),
                    stage,
                    intern(source) if source is not None else None,
                    intern(dest) if dest is not None else None,
                    *rest,
                ),
            )
        except (TypeError, ValueError):
            raise Undecodable(f"event {i}: IDs that are not hex or names that are not text") from None
        out.append(ev)
    return out
