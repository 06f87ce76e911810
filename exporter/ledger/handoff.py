"""A follower's batch of events as one handoff row (postgres_store): a compact JSON list of event
lists in records.Event's field order, span IDs as hex. One row per batch rather than a row per span:
PostgreSQL's per-row cost (header, index entry, WAL record) is paid once per batch
(docs/performance.md, issue 16 part two)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import orjson

from syncwatch.ledger.records import Event


def encode(events: Sequence[Event]) -> bytes:
    return orjson.dumps([(ev.trace_id.hex(), ev.span_id.hex(), *ev[2:]) for ev in events])


def decode(data: bytes) -> list[Event]:
    new, fromhex, intern = tuple.__new__, bytes.fromhex, sys.intern
    out: list[Event] = []
    for row in orjson.loads(data):
        trace, span, corr, flow, stage, source, dest, *rest = row
        out.append(
            new(
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
        )
    return out
