"""Replicas on one PostgreSQL ledger under hostile conditions (issue 16, part two): handoff rows
that cannot be applied, the same batch at both replicas, a follower killed after its answer."""

from __future__ import annotations

import os
import signal

import psycopg
import pytest
from otel_helpers import now
from otlp_raw import post, stage_request
from pg_support import PG_PORT, dsn, reset, scratch_database, storage_config
from replicas_load import COMMON, summed, wait_until
from sidecar import Sidecar

pytestmark = pytest.mark.databases

TX = {"flow": "orders", "source": "storefront", "destination": "erp"}


@pytest.fixture(scope="module")
def pg_db():
    with scratch_database("syncwatch_replicas_hostile") as name:
        yield name


@pytest.fixture
def replicas(tmp_path, pg_db):
    """replicas(n, flows=...) -> n started sidecars on this module's database; the first one started
    in the test leads."""
    reset(pg_db)
    started: list[Sidecar] = []

    def make(n: int = 2, flows: dict | None = None, ttl: str = "4s") -> list[Sidecar]:
        out = []
        for _ in range(n):
            name = f"replica-{len(started)}"
            storage = storage_config(pg_db, tmp_path / name, PG_PORT)
            storage["postgresql"]["lease_ttl"] = ttl
            cfg = {"storage": {**storage, "expire_after": "1h"}, "flows": flows or {"orders": {"deadline": "3s"}}}
            sc = Sidecar(tmp_path / name, cfg).start()
            started.append(sc)
            out.append(sc)
            if len(started) == 1:
                sc.wait_for("syncwatch_leader", 1)
        return out

    yield make
    for sc in started:
        if sc.proc is not None and sc.proc.poll() is None:
            os.kill(sc.proc.pid, signal.SIGCONT)
            sc.stop()


def sql(db: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn(db), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def source(corr: str, at: float, **extra) -> dict:
    return {"_start": at, "syncwatch.stage": "source", **COMMON, "correlation_id": corr, **extra}


def send(sc: Sidecar, spans: list[dict]) -> int:
    return post(sc.otlp_http + "/v1/traces", stage_request(spans).SerializeToString())[0]


def test_a_handoff_row_that_cannot_be_applied_is_moved_aside_and_counted(replicas, pg_db):
    """A corrupt row (not JSON, or JSON of the wrong shape) must not stop the leader: before the fix
    every leader write drained it again, failed, and answered 503 for good."""
    a, b = replicas(2)
    sql(pg_db, "INSERT INTO handoff (spans, events) VALUES (3, %s), (2, %s)", (b"\xffnot json", b'[["ab", 1]]'))
    assert send(b, [source("handed", now() - 1)]) == 200  # a good row after the bad ones
    assert send(a, [source("own", now() - 1)]) == 200
    wait_until(lambda: a.metric("syncwatch_transactions_pending", **TX) == 2, 5, "both applied")
    assert sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)]
    assert sql(pg_db, "SELECT spans, events FROM handoff_rejected ORDER BY id") == [
        (3, b"\xffnot json"),
        (2, b'[["ab", 1]]'),
    ]
    assert summed([a, b], "syncwatch_dropped_total", reason="handoff_rejected") == 5
    assert a.get("/readyz")[0] == 200
    assert "handoff row" in a.log() and "not json" not in a.log()  # logged, without its payload


def test_a_flow_only_the_follower_knows_is_counted_not_silently_dropped(replicas, pg_db):
    """The follower (config rolled out first) knows flow `payments` and its destination; the leader
    does not, so a source span naming no destination opens nothing there: it must be counted
    (before, it vanished with a 200 and no trace in any metric)."""
    (a,) = replicas(1)
    (b,) = replicas(1, flows={"orders": {"deadline": "3s"}, "payments": {"destinations": ["psp"]}})
    payments = {**COMMON, "syncwatch.flow": "payments"}
    del payments["syncwatch.destination"]
    at = now() - 1
    assert send(b, [{"_start": at, "syncwatch.stage": "source", **payments, "correlation_id": "p-1"}]) == 200
    assert send(b, [{**source("o-1", at)}]) == 200  # a known flow in the same way still counts
    wait_until(lambda: a.metric("syncwatch_transactions_pending", **TX) == 1, 5, "o-1 applied")
    assert sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)]
    assert summed([a, b], "syncwatch_dropped_total", reason="no_destination") == 1
    assert sql(pg_db, "SELECT corr FROM open_tx") == [("o-1",)]
    assert "flow 'payments'" in a.log() and "no destination" in a.log()
