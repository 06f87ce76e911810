"""Several syncwatch replicas on one PostgreSQL ledger (issue 16, part two), as real sidecars: one
leader through the lease row, the followers hand their spans off to it; whole-ledger figures summed
over the replicas count each transaction once; a killed, paused or cut-off leader is replaced and
no acknowledged span is lost."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest
from collectors_fakes.tcp_proxy import TcpProxy
from otel_helpers import now
from otlp_raw import post, stage_request
from pg_support import PG_HOST, PG_PORT, dsn, reset, storage_config
from replicas_load import COMMON, Load, series, summed, wait_until
from sidecar import Sidecar

TX = {"flow": "orders", "source": "storefront", "destination": "erp"}
WHOLE_LEDGER = ("syncwatch_transactions_pending", "syncwatch_transactions_overdue")


@pytest.fixture
def replicas(tmp_path, pg_db):
    """replicas(n, port=...) -> n started sidecars on this module's database (emptied first); the
    first one started leads."""
    reset(pg_db)
    started: list[Sidecar] = []

    def make(n: int = 2, port: int = PG_PORT, ttl: str = "4s", **extra) -> list[Sidecar]:
        out = []
        for i in range(n):
            name = f"replica-{len(started)}"
            storage = storage_config(pg_db, tmp_path / name, port)
            storage["postgresql"]["lease_ttl"] = ttl
            cfg = {"storage": {**storage, "expire_after": "1h"}, "flows": {"orders": {"deadline": "3s"}}, **extra}
            sc = Sidecar(tmp_path / name, cfg).start()
            started.append(sc)
            out.append(sc)
            if i == 0:
                sc.wait_for("syncwatch_leader", 1)
        return out

    yield make
    for sc in started:
        if sc.proc is not None and sc.proc.poll() is not None:
            continue
        os.kill(sc.proc.pid, signal.SIGCONT)  # a test may leave one stopped
        sc.stop()


def ledger_corrs(db: str) -> tuple[set[str], set[str]]:
    with psycopg.connect(dsn(db)) as conn:
        open_rows = {r[0] for r in conn.execute("SELECT corr FROM open_tx")}
        closed_rows = {r[0] for r in conn.execute("SELECT corr FROM closed_tx")}
    return open_rows, closed_rows


def handed_off(db: str) -> int:
    """Batches in the handoff table, not yet applied by the leader."""
    with psycopg.connect(dsn(db)) as conn:
        return conn.execute("SELECT count(*) FROM handoff").fetchone()[0]


def send(sc: Sidecar, spans: list[dict]) -> int:
    return post(sc.otlp_http + "/v1/traces", stage_request(spans).SerializeToString())[0]


def test_two_replicas_split_the_load_and_count_every_transaction_once(replicas, pg_db):
    a, b = replicas(2)
    both = [a, b]
    assert (a.metric("syncwatch_leader"), b.metric("syncwatch_leader")) == (1, 0)
    t0 = now() - 30  # every deadline (3s) has passed

    def span(corr: str, stage: str, at: float, idem: str | None = None) -> dict:
        attrs = {"syncwatch.idempotency_key": idem} if idem else {}
        ids = {"_trace_id": os.urandom(16), "_span_id": os.urandom(8)}  # kept: a redelivery is the same span
        return {**ids, "_start": at, "syncwatch.stage": stage, **COMMON, "correlation_id": corr, **attrs}

    requests = [[span(f"T-{i}", "source", t0)] for i in range(20)]
    # 12 confirmed 5s after the change (4 of them with an idempotency key); 8 never: overdue.
    requests += [[span(f"T-{i}", "confirm", t0 + 5, f"k-{i}" if i < 4 else None)] for i in range(12)]
    # The same keys applied once more, by other spans: 4 duplicate applies.
    requests += [[span(f"T-{i}", "confirm", t0 + 7, f"k-{i}")] for i in range(4)]
    for j, spans in enumerate(requests):  # alternate requests: the load split over both replicas
        assert send(both[j % 2], spans) == 200
    for j, spans in enumerate(requests[:6] + requests[20:26]):  # redelivered, each to the other replica
        assert send(both[(j + 1) % 2], spans) == 200
    wait_until(lambda: summed(both, "syncwatch_transactions_overdue", **TX) == 8, 10, "8 overdue")
    wait_until(lambda: handed_off(pg_db) == 0, 5, "handoff drained")
    time.sleep(0.5)  # anything still to come would change the figures below
    assert summed(both, "syncwatch_transactions_overdue", **TX) == 8
    assert summed(both, "syncwatch_transactions_pending", **TX) == 8
    assert summed(both, "syncwatch_transactions_total", outcome="confirmed", **TX) == 12
    assert summed(both, "syncwatch_sync_lag_seconds_count", **TX) == 12
    assert summed(both, "syncwatch_sync_lag_seconds_sum", **TX) == pytest.approx(60.0, abs=1e-3)
    dest = {"flow": "orders", "destination": "erp"}
    assert summed(both, "syncwatch_duplicate_applies_total", **dest) == 4
    assert summed(both, "syncwatch_leader") == 1
    for name in WHOLE_LEDGER:  # the follower exports no whole-ledger series at all
        assert series(b, name) == []
    assert b.metric("syncwatch_handoff_backlog_spans") == 0
    with psycopg.connect(dsn(pg_db)) as conn:
        assert conn.execute("SELECT count(*), min(corr), max(corr) FROM open_tx").fetchone() == (8, "T-12", "T-19")
        closed = conn.execute("SELECT outcome, count(*), min(lag), max(lag) FROM closed_tx GROUP BY 1").fetchall()
        assert closed == [("confirmed", 12, pytest.approx(5.0, abs=1e-3), pytest.approx(5.0, abs=1e-3))]
        applies = conn.execute("SELECT idem, applies FROM applies ORDER BY idem").fetchall()
        assert applies == [("k-0", 2), ("k-1", 2), ("k-2", 2), ("k-3", 2)]
        assert conn.execute("SELECT count(*) FROM handoff").fetchone() == (0,)


def test_a_killed_leader_is_replaced_within_10s_and_no_acknowledged_span_is_lost(replicas, pg_db):
    a, b = replicas(2)
    load = Load([a, b], changed_at=now() - 60).start()  # every transaction overdue once recorded
    wait_until(lambda: len(load.acked) >= 2000, 30, "load under way")
    a.kill9()
    killed = time.monotonic()
    wait_until(lambda: b.metric("syncwatch_leader") == 1, 10, "the follower takes over")
    took_over = time.monotonic() - killed
    time.sleep(1)  # load on the new leader
    load.stop()
    assert took_over < 10
    assert b.metric("syncwatch_leader_changes_total", change="acquired") == 1
    wait_until(lambda: handed_off(pg_db) == 0, 10, "handoff drained")
    open_rows, closed_rows = ledger_corrs(pg_db)
    assert load.acked <= open_rows  # every acknowledged span is in the ledger
    assert closed_rows == set()
    # Overdue transactions are still reported, by the new leader: all of them, those the killed
    # leader recorded included (sent to it and perhaps recorded without an answer, too).
    wait_until(lambda: b.metric("syncwatch_transactions_overdue", **TX) == len(open_rows), 5, "overdue")
    assert b.metric("syncwatch_transactions_pending", **TX) == len(open_rows)
    assert load.codes.get(200, 0) > 0 and set(load.codes) <= {200, 503, 0}


def test_a_paused_leader_writes_nothing_after_it_resumes_and_follows(replicas, pg_db):
    """Fencing through a real pause: the old leader's spans, received while it was stopped, reach the
    ledger through the new leader (its pending gauge counts them), never by the old one's hand."""
    a, b = replicas(2)
    t0 = now() - 1
    assert send(a, [{"_start": t0, "syncwatch.stage": "source", **COMMON, "correlation_id": "before"}]) == 200
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: b.metric("syncwatch_leader") == 1, 10, "the follower takes over")
        answers: list[int] = []
        # Sent to the stopped leader: the kernel queues it; it is handled after SIGCONT.
        sender = threading.Thread(
            target=lambda: answers.append(
                send(a, [{"_start": t0, "syncwatch.stage": "source", **COMMON, "correlation_id": "paused"}])
            )
        )
        sender.start()
        time.sleep(0.5)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    sender.join(timeout=20)
    assert answers == [200]
    assert a.wait_for("syncwatch_leader", 0) == 0
    assert a.metric("syncwatch_leader_changes_total", change="lost") == 1
    for name in WHOLE_LEDGER:
        assert series(a, name) == []
    wait_until(lambda: b.metric("syncwatch_transactions_pending", **TX) == 2, 5, "the new leader applied it")
    assert ledger_corrs(pg_db) == ({"before", "paused"}, set())
    with psycopg.connect(dsn(pg_db)) as conn:
        assert conn.execute("SELECT epoch FROM leader_lease").fetchone() == (2,)


@pytest.mark.rabbitmq
def test_collectors_run_on_the_leader_only_and_move_with_the_lease(replicas, vhost):
    collectors = [{"type": "rabbitmq", "name": "wms", "vhosts": [vhost]}]
    a, b = replicas(2, collectors=collectors, sampling={"interval": "1s", "fast_interval": "1s"})
    collector_series = ("syncwatch_collector_up", "syncwatch_collector_interval_seconds")
    assert a.wait_for("syncwatch_collector_up", 1, timeout=15, collector="wms") == 1
    for name in collector_series:
        assert series(b, name) == []  # the follower samples nothing and exports no collector gauge
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: b.metric("syncwatch_leader") == 1, 10, "the follower takes over")
        assert b.wait_for("syncwatch_collector_up", 1, timeout=15, collector="wms") == 1
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert a.wait_for("syncwatch_leader", 0) == 0
    wait_until(lambda: series(a, "syncwatch_collector_up") == [], 5, "the old leader drops its collector gauges")
    assert series(a, "syncwatch_collector_interval_seconds") == []
    assert summed([a, b], "syncwatch_collector_up", collector="wms") == 1


def test_postgresql_cut_for_20s_under_load_answers_503_and_recovers(replicas, pg_db):
    proxy = TcpProxy(PG_HOST, PG_PORT).start()
    try:
        a, b = replicas(2, port=proxy.port)
        load = Load([a, b], changed_at=now() - 60, per_request=10).start()
        wait_until(lambda: len(load.acked) >= 500, 30, "load under way")
        proxy.stop()  # every connection cut, new ones refused
        cut = time.monotonic()
        wait_until(lambda: load.codes.get(503, 0) >= 4, 15, "503 during the cut")
        assert a.get("/readyz")[0] == 503 and b.get("/readyz")[0] == 503
        time.sleep(max(0.0, 20 - (time.monotonic() - cut)))
        acked_during = len(load.acked)
        proxy.start()
        wait_until(lambda: summed([a, b], "syncwatch_leader") == 1, 15, "one leader again")
        wait_until(lambda: len(load.acked) > acked_during + 200, 20, "acknowledging again")
        load.stop()
        assert load.retry_after == {"1"}
        assert a.get("/readyz")[0] == 200 and b.get("/readyz")[0] == 200
        wait_until(lambda: handed_off(pg_db) == 0, 10, "handoff drained")
        open_rows, _ = ledger_corrs(pg_db)
        assert load.acked <= open_rows  # no acknowledged span lost
        wait_until(lambda: summed([a, b], "syncwatch_transactions_overdue", **TX) == len(open_rows), 5, "overdue")
        dropped = summed([a, b], "syncwatch_dropped_total", reason="ledger_unavailable")
        assert dropped >= 10 * 4  # every refused span counted
    finally:
        proxy.close()
