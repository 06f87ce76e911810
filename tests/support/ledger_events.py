"""Ledger events built by hand and one scenario through every transition, for the ledger tests on
each backend (SQLite, PostgreSQL): span IDs count up from 1 (reset_ids() gives both backends the same)."""

from __future__ import annotations

import itertools
import sqlite3

import orjson

from syncwatch.ledger.records import Event
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL, STAGE_SOURCE
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

T0 = 1_790_000_000.0
_ids = itertools.count(1)


def reset_ids() -> None:
    global _ids
    _ids = itertools.count(1)


def ev(stage, corr, at, dest="erp", attempt=None, code=None, idem=None, error=None):
    n = next(_ids)
    return Event(
        n.to_bytes(16, "big"),
        n.to_bytes(8, "big"),
        corr,
        "orders",
        stage,
        "storefront",
        dest,
        at - 0.5,
        at,
        at if stage == STAGE_SOURCE else None,
        attempt,
        code,
        error,
        idem,
        at,
    )


def closed(path) -> dict:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT corr, dest, flow, outcome, lag, attempts, timeline FROM closed_tx").fetchall()
    finally:
        db.close()
    return {r[:3]: (r[3], r[4], r[5], orjson.loads(r[6]) if r[6] else None) for r in rows}


def scenario() -> list[list[Event]]:
    """Every transition: open, retry, confirm, fail, confirm before source, late attempt, late
    source, a duplicate apply, a redelivered batch; expiry follows from the clock."""
    b1 = [ev(STAGE_SOURCE, f"o-{i}", T0) for i in range(6)]
    b1 += [ev(STAGE_ATTEMPT, "o-0", T0 + 1, attempt=1, code="503"), ev(STAGE_ATTEMPT, "o-0", T0 + 5, code="200")]
    b1 += [ev(STAGE_CONFIRM, "o-0", T0 + 6, idem="k-0"), ev(STAGE_CONFIRM, "early", T0 + 2)]
    b2 = [ev(STAGE_FAIL, "o-1", T0 + 7, error="retries_exhausted"), ev(STAGE_ATTEMPT, "o-2", T0 + 8, code="500")]
    b2 += [ev(STAGE_CONFIRM, "o-2", T0 + 9), ev(STAGE_CONFIRM, "o-3", T0 + 9, idem="k-3")]
    b3 = [ev(STAGE_SOURCE, "early", T0 - 10), ev(STAGE_ATTEMPT, "o-2", T0 + 10, code="200")]
    b3 += [ev(STAGE_CONFIRM, "o-3", T0 + 11, idem="k-3"), ev(STAGE_CONFIRM, "o-1", T0 + 12)]
    return [b1, b2, b3, b3]


def run(ledger: Ledger, now: list[float]) -> None:
    for batch in scenario():
        ledger.record(batch)
    now[0] = T0 + 61
    ledger.tick(now[0])  # overdue


def samples(metrics: Metrics) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in metrics.registry.collect()
        if f.name != "syncwatch_build_info"
        for s in f.samples
        if not s.name.endswith("_created")
    }
