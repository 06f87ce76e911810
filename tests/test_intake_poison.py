"""A request the ledger cannot record for a reason that is not the store's (a bug in syncwatch) fails
alone: the other requests of its group-commit batch are recorded and answered 200, it is answered
500 (exporters do not retry that) and counted as `ledger_error`, readiness stays up. Store failures
stay 503 + Retry-After (tests/test_otlp_errors.py, tests/test_ledger_postgres_scenarios.py).

How the bug gets in: no span that extraction accepts is known to make Ledger.record raise (that is
the point of the defence), so the test replaces one method of the real ledger object with one that
raises for one correlation ID, inside the real transaction (the rollback and rebuilding memory are
the real ones). Only a test can do that; no config key or span reaches it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import pytest
from otlp_raw import stage_request

from syncwatch.intake.decode import PROTOBUF, OtlpError, decode_traces
from syncwatch.ledger.store import StoreBusy, is_store_failure

POISON = "order-poison"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.databases)])
def harness(request, make_ledger, tmp_path):
    if request.param == "sqlite":
        return make_ledger()
    from pg_support import reset, storage_config

    db = request.getfixturevalue("pg_db")
    reset(db)
    return make_ledger({"storage": storage_config(db, tmp_path / "pg")})


def _source(corr: str):
    t0 = time.time() - 60
    req = stage_request(
        [
            {"_start": t0, "syncwatch.stage": "source", "syncwatch.flow": "orders", "correlation_id": corr},
            {"_start": t0 + 1, "syncwatch.stage": "attempt", "syncwatch.flow": "orders", "correlation_id": corr}
            | {"syncwatch.destination": "erp", "syncwatch.attempt": 1},
        ]
    )
    return decode_traces(req.SerializeToString(), PROTOBUF)


def _pending(harness) -> float | None:
    return harness.metric("syncwatch_transactions_pending", flow="orders", destination="erp", source="unknown")


def _poison(harness, monkeypatch) -> None:
    ledger = harness.ledger
    real = ledger._on_source

    def on_source(ev):
        if ev.corr == POISON:
            raise KeyError("a bug in syncwatch")
        real(ev)

    monkeypatch.setattr(ledger, "_on_source", on_source)


def _export_batch(harness, corrs: list[str]) -> list:
    """One group commit of these requests, as the writer thread makes it; each request's answer
    (an ExportTraceServiceResponse or the OtlpError it is refused with)."""
    service, writer = harness.service, harness.writer
    loop = harness._loop
    queued: list[tuple] = []

    def submit(request, n_spans):  # queue, as LedgerWriter.submit does; recorded below as one batch
        future = loop.create_future()
        queued.append((request, n_spans, future, loop))
        return future

    writer.submit = submit

    async def run():
        tasks = [asyncio.ensure_future(service.export_traces(_source(c))) for c in corrs]
        await asyncio.sleep(0)  # every request is queued
        assert len(queued) == len(corrs)
        writer._record(queued)
        return await asyncio.gather(*tasks, return_exceptions=True)

    return loop.run_until_complete(run())


def test_one_poison_request_fails_alone_and_the_batch_is_recorded(harness, monkeypatch, caplog):
    _poison(harness, monkeypatch)
    caplog.set_level(logging.DEBUG, logger="syncwatch.intake")
    answers = _export_batch(harness, ["order-1", POISON, "order-2"])
    assert not isinstance(answers[0], BaseException) and not isinstance(answers[2], BaseException)
    refused = answers[1]
    assert isinstance(refused, OtlpError)
    assert (refused.status, refused.reason) == (500, "ledger_error")
    assert refused.message == ("syncwatch could not record this request (KeyError), a bug of its own; please report it")
    assert harness.metric("syncwatch_dropped_total", reason="ledger_error") == 2
    assert harness.metric("syncwatch_dropped_total", reason="ledger_unavailable") == 0
    assert harness.metric("syncwatch_spans_total", result="correlated") == 4
    assert _pending(harness) == 2
    assert harness.writer.healthy  # /readyz stays ready: the store is fine
    # A second batch with the same poison: recorded again around it, the traceback not logged again.
    answers = _export_batch(harness, [POISON, "order-3"])
    assert isinstance(answers[0], OtlpError) and not isinstance(answers[1], BaseException)
    assert harness.metric("syncwatch_dropped_total", reason="ledger_error") == 4
    assert _pending(harness) == 3
    tracebacks = [r for r in caplog.records if r.exc_info and r.name == "syncwatch.intake"]
    assert [r.getMessage() for r in tracebacks] == [
        "ledger write failed, not for a storage reason (a bug in syncwatch)"
    ]
    assert all(POISON not in r.getMessage() for r in caplog.records)  # no payload in the log
    committed = sorted(row.corr for row in harness.ledger.store.open_rows())
    assert committed == ["order-1", "order-2", "order-3"]


def test_store_failures_are_told_apart_from_bugs(tmp_path):
    db = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(sqlite3.Error) as locked:
        db.execute("SELECT * FROM missing")  # OperationalError: no such table
    with pytest.raises(sqlite3.Error) as integrity:
        db.execute("CREATE TABLE t (a PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (1)")
    assert is_store_failure(locked.value)
    assert is_store_failure(OSError(28, "No space left on device"))
    assert is_store_failure(StoreBusy("another replica leads"))
    assert is_store_failure(sqlite3.DatabaseError("file is not a database"))
    assert not is_store_failure(integrity.value)  # a constraint syncwatch broke: a bug
    assert not is_store_failure(KeyError("x"))
    assert not is_store_failure(TypeError("x"))
    import psycopg

    assert is_store_failure(psycopg.OperationalError("connection lost"))
    assert is_store_failure(psycopg.errors.QueryCanceled("statement timeout"))
    assert is_store_failure(psycopg.errors.ReadOnlySqlTransaction("standby"))
    assert not is_store_failure(psycopg.errors.UniqueViolation("dup"))
    assert not is_store_failure(psycopg.ProgrammingError("bad SQL"))
