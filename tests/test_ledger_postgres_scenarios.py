"""PostgreSQL as the ledger's backend through a real sidecar (storage.backend: postgresql, a database
of this module's own); the core scenarios run on it in tests/test_core_scenarios.py (the postgresql
cases). PostgreSQL cut off behind a TCP proxy: 503 + Retry-After, counted, and recovery without a restart."""

from __future__ import annotations

import time

import psycopg
import pytest
from collectors_fakes.tcp_proxy import TcpProxy
from otel_helpers import now
from otlp_raw import post, stage_request
from pg_support import PG_HOST, PG_PORT, dsn, reset, storage_config
from sidecar import Sidecar


@pytest.fixture
def make_sidecar(tmp_path, pg_db):
    """As conftest's make_sidecar, with the ledger on this module's PostgreSQL database (emptied first)."""
    reset(pg_db)
    started = []

    def make(config=None, env=None, name="sidecar", start=True, port=PG_PORT):
        cfg = dict(config or {})
        cfg["storage"] = {**storage_config(pg_db, tmp_path / name, port), **cfg.get("storage", {})}
        sc = Sidecar(tmp_path / name, cfg, env)
        started.append(sc)
        return sc.start() if start else sc

    yield make
    for sc in started:
        sc.stop()


@pytest.fixture
def sidecar(make_sidecar):
    return make_sidecar()


COMMON = {
    "syncwatch.flow": "orders",
    "syncwatch.source": "storefront",
    "syncwatch.destination": "erp",
}


@pytest.mark.parametrize("one_request", [True, False], ids=["one batch", "two batches"])
def test_a_confirm_after_a_fail_replaces_it_in_postgresql(sidecar, pg_db, one_request):
    t0 = now() - 60
    common = {**COMMON, "correlation_id": "SO-4711"}
    first = [
        {"_start": t0, "syncwatch.stage": "source", **common},
        {"_start": t0 + 1, "_end": t0 + 2, "syncwatch.stage": "attempt", "http.response.status_code": 500, **common},
        {"_start": t0 + 3, "_end": t0 + 3, "syncwatch.stage": "fail", "error.type": "retries_exhausted", **common},
    ]
    second = [{"_start": t0 + 30, "_end": t0 + 31, "syncwatch.stage": "confirm", **common}]
    for spans in [first + second] if one_request else [first, second]:
        assert post(sidecar.otlp_http + "/v1/traces", stage_request(spans).SerializeToString())[0] == 200
    # Answered 200: the rows are committed in PostgreSQL already, no waiting.
    with psycopg.connect(dsn(pg_db)) as conn:
        rows = conn.execute("SELECT outcome, attempts, lag FROM closed_tx WHERE corr = 'SO-4711'").fetchall()
    assert rows == [("confirmed", 1, pytest.approx(31.0, abs=1e-3))]
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert sidecar.metric("syncwatch_transactions_total", outcome="confirmed", **tx) == 1


def test_postgresql_cut_off_answers_503_and_recovers_without_a_restart(make_sidecar, pg_db):
    proxy = TcpProxy(PG_HOST, PG_PORT).start()
    try:
        sc = make_sidecar(port=proxy.port)
        t0 = now() - 10

        def send(corr: str) -> tuple[int, dict]:
            spans = [{"_start": t0, "syncwatch.stage": "source", **COMMON, "correlation_id": corr}]
            status, headers = post(sc.otlp_http + "/v1/traces", stage_request(spans).SerializeToString())[:2]
            return status, headers

        assert send("before")[0] == 200
        proxy.stop()  # every connection cut, new ones refused
        status, headers = send("during-1")
        assert status == 503 and headers.get("Retry-After") == "1"
        assert send("during-2")[0] == 503
        assert sc.metric("syncwatch_dropped_total", reason="ledger_unavailable") == 2
        assert sc.get("/readyz")[0] == 503
        proxy.start()
        deadline = time.monotonic() + 10
        while (status := send("during-2")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200  # the sender's retry is recorded, no restart
        assert send("after")[0] == 200
        assert sc.get("/readyz")[0] == 200
        with psycopg.connect(dsn(pg_db)) as conn:
            open_rows = {r[0] for r in conn.execute("SELECT corr FROM open_tx")}
        assert open_rows == {"before", "during-2", "after"}  # every acknowledged span, nothing else
        tx = dict(flow="orders", source="storefront", destination="erp")
        assert sc.metric("syncwatch_transactions_pending", **tx) == 3
    finally:
        proxy.close()
