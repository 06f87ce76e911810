"""Replicas on one PostgreSQL ledger under hostile conditions (issue 16, part two): handoff rows
that cannot be applied, the same batch at both replicas, a follower killed after its answer."""

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
from replicas_load import COMMON, summed, wait_until
from sidecar import Sidecar

pytestmark = pytest.mark.databases

TX = {"flow": "orders", "source": "storefront", "destination": "erp"}


@pytest.fixture
def replicas(tmp_path, pg_db):
    """replicas(n, flows=...) -> n started sidecars on this module's database; the first one started
    in the test leads."""
    reset(pg_db)
    started: list[Sidecar] = []

    def make(n: int = 2, flows: dict | None = None, ttl: str = "4s", port: int = PG_PORT) -> list[Sidecar]:
        out = []
        for _ in range(n):
            name = f"replica-{len(started)}"
            storage = storage_config(pg_db, tmp_path / name, port)
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
    wait_until(lambda: summed([a, b], "syncwatch_dropped_total", reason="handoff_rejected") == 5, 5, "counted")
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


def span(stage: str, corr: str, at: float, **extra) -> dict:
    ids = {"_trace_id": os.urandom(16), "_span_id": os.urandom(8)}  # kept: a redelivery is the same span
    return {**ids, "_start": at, "syncwatch.stage": stage, **COMMON, "correlation_id": corr, **extra}


def test_confirm_and_source_at_different_replicas_across_a_leader_change_count_once(replicas, pg_db):
    """Both orders: a confirm applied by the old leader whose source reaches the new one, and a
    source applied by the old leader whose confirm reaches the new one; redeliveries and a second
    apply of the same idempotency key after the change."""
    a, b = replicas(2)
    t0 = now() - 30
    s2, c1 = span("source", "S2", t0), span("confirm", "C1", t0 + 5, **{"syncwatch.idempotency_key": "k1"})
    assert send(b, [s2]) == 200 and send(b, [c1]) == 200  # handed off, applied by a
    wait_until(lambda: a.metric("syncwatch_transactions_total", outcome="confirmed", **TX) == 1, 5, "C1 closed")
    assert a.metric("syncwatch_transactions_pending", **TX) == 1
    a.stop()  # a clean stop hands the lease on at once
    b.wait_for("syncwatch_leader", 1)
    (c,) = replicas(1)
    s1, c2 = span("source", "C1", t0), span("confirm", "S2", t0 + 5)
    for sc, spans in ((c, [c2]), (c, [s1]), (c, [c1]), (b, [s2]), (b, [c1])):  # c1, s2 again: redeliveries
        assert send(sc, spans) == 200
    again = span("confirm", "C1", t0 + 9, **{"syncwatch.idempotency_key": "k1"})  # a second apply of k1
    assert send(c, [again]) == 200
    wait_until(lambda: b.metric("syncwatch_duplicate_applies_total", flow="orders", destination="erp") == 1, 5, "dup")
    wait_until(lambda: sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)], 5, "handoff drained")
    assert b.metric("syncwatch_transactions_total", outcome="confirmed", **TX) == 1  # S2; C1 was a's
    assert b.metric("syncwatch_sync_lag_seconds_count", **TX) == 2  # both lags, observed once each
    assert b.metric("syncwatch_sync_lag_seconds_sum", **TX) == pytest.approx(10.0, abs=1e-3)
    assert b.metric("syncwatch_transactions_pending", **TX) == 0
    assert b.metric("syncwatch_transactions_overdue", **TX) == 0
    rows = sql(pg_db, "SELECT corr, outcome, lag FROM closed_tx ORDER BY corr")
    assert rows == [
        ("C1", "confirmed", pytest.approx(5.0, abs=1e-3)),
        ("S2", "confirmed", pytest.approx(5.0, abs=1e-3)),
    ]
    assert sql(pg_db, "SELECT idem, applies FROM applies") == [("k1", 2)]
    assert sql(pg_db, "SELECT count(*) FROM open_tx") == [(0,)]


def handoff_rows(corrs_per_row: list[list[str]], at: float, flow: str = "orders") -> list[tuple[int, bytes]]:
    """(spans, events) of handoff rows as a follower writes them: source spans of these corrs."""
    from syncwatch.ledger.handoff import encode
    from syncwatch.ledger.records import Event
    from syncwatch.ledger.schema import STAGE_SOURCE

    def event(corr: str) -> Event:
        ids = os.urandom(24)
        return Event(
            ids[:16],
            ids[16:],
            corr,
            flow,
            STAGE_SOURCE,
            "storefront",
            "erp",
            at,
            at,
            at,
            None,
            None,
            None,
            None,
            at,
        )

    return [(len(corrs), encode([event(c) for c in corrs])) for corrs in corrs_per_row]


def test_sigkill_of_the_leader_while_draining_and_of_a_follower_after_its_200_lose_nothing(replicas, pg_db):
    a, b, c = replicas(3)
    at = now() - 60  # overdue once applied
    batches = [[f"h-{i}-{k}" for k in range(50)] for i in range(2000)]
    with psycopg.connect(dsn(pg_db), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO handoff (spans, events) VALUES (%s, %s)", handoff_rows(batches, at))
    total = 2000 * 50
    wait_until(lambda: 0 < sql(pg_db, "SELECT count(*) FROM handoff")[0][0] < 1950, 20, "the leader drains")
    a.kill9()  # in the middle of draining: each drained row went with a committed transaction, or not at all
    assert send(c, [source("from-c", at)]) == 200
    c.kill9()  # right after its 200: its handoff row is committed, the leader applies it
    wait_until(lambda: b.metric("syncwatch_leader") == 1, 10, "b takes over")
    wait_until(lambda: sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)], 25, "b drains the rest")
    assert sql(pg_db, "SELECT count(*), count(DISTINCT corr) FROM open_tx") == [(total + 1, total + 1)]
    wait_until(lambda: b.metric("syncwatch_transactions_overdue", **TX) == total + 1, 5, "all overdue")
    assert b.metric("syncwatch_transactions_pending", **TX) == total + 1
    assert b.metric("syncwatch_dropped_total", reason="handoff_rejected") == 0


@pytest.mark.parametrize("attribute", ["syncwatch.flow", "syncwatch.source", "syncwatch.destination", "idempotency"])
def test_a_nul_character_in_a_name_cannot_block_the_ledger(replicas, pg_db, attribute):
    """PostgreSQL text holds no NUL character: a span naming one failed every transaction it was
    in. At the leader, every request batched with it got a 503, retried with it again; handed
    off, it blocked the handoff table for good. It must be refused as an invalid span instead."""
    a, b = replicas(2)
    at = now() - 1
    if attribute == "idempotency":
        bad = span("confirm", "bad", at, **{"syncwatch.idempotency_key": "k\x00"})
    else:
        bad = {**span("source", "bad", at), attribute: "x\x00y"}
    for sc, corr in ((a, "good-a"), (b, "good-b")):
        status, _, body = post(sc.otlp_http + "/v1/traces", stage_request([bad, source(corr, at)]).SerializeToString())
        assert status == 200
    wait_until(lambda: sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)], 5, "handoff drained")
    assert sql(pg_db, "SELECT corr FROM open_tx ORDER BY corr") == [("good-a",), ("good-b",)]
    assert summed([a, b], "syncwatch_dropped_total", reason="invalid_span") == 2
    assert a.get("/readyz")[0] == 200


def test_a_handoff_row_the_database_refuses_is_moved_aside_and_the_rest_applied(replicas, pg_db):
    """A row that decodes but whose events the database refuses (here a NUL in a name, written by
    a follower of a release that let it through): the leader applies the rows around it one at a
    time, moves that one aside and counts it, instead of failing every transaction for good."""
    a, b = replicas(2)
    at = now() - 1
    good = handoff_rows([["g-1"], ["g-2"]], at)
    poison = handoff_rows([["p-1", "p-2"]], at, flow="ord\x00ers")
    with psycopg.connect(dsn(pg_db), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO handoff (spans, events) VALUES (%s, %s)", [good[0], *poison, good[1]])
    assert send(a, [source("own", at)]) == 200
    wait_until(lambda: sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)], 5, "handoff drained")
    assert sql(pg_db, "SELECT corr FROM open_tx ORDER BY corr") == [("g-1",), ("g-2",), ("own",)]
    assert sql(pg_db, "SELECT spans, events, reason FROM handoff_rejected") == [(2, poison[0][1], "DataError")]
    # the metrics follow the commits a moment later
    wait_until(lambda: a.metric("syncwatch_dropped_total", reason="handoff_rejected") == 2, 5, "counted")
    wait_until(lambda: a.metric("syncwatch_transactions_pending", **TX) == 3, 5, "pending")
    wait_until(lambda: a.get("/readyz")[0] == 200, 5, "ready")


def test_a_lease_row_locked_past_the_ttl_moves_the_lease_without_double_counting(replicas, pg_db):
    """An operator's long transaction holds the lease row (say a stray LOCK TABLE) for twice the
    ttl: renewals and fence checks wait and fail, the leader lets go; after the lock is gone one
    replica leads again and the overdue transactions (also those handed off meanwhile) are
    reported exactly once, and nothing acknowledged is lost."""
    a, b = replicas(2)
    at = now() - 60
    assert send(a, [source(f"before-{i}", at) for i in range(50)]) == 200
    wait_until(lambda: a.metric("syncwatch_transactions_overdue", **TX) == 50, 5, "50 overdue")
    codes: dict[str, int] = {}
    with psycopg.connect(dsn(pg_db)) as locker:
        locker.execute("LOCK TABLE leader_lease IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        wait_until(lambda: a.metric("syncwatch_leader") == 0, 15, "the leader lets go")
        for i in range(5):
            codes[f"during-{i}"] = send(b, [source(f"during-{i}", at)])
        time.sleep(max(0.0, 8 - (time.monotonic() - locked)))
    wait_until(lambda: summed([a, b], "syncwatch_leader") == 1, 15, "one leader again")
    wait_until(lambda: sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)], 10, "handoff drained")
    acked = {corr for corr, code in codes.items() if code == 200}
    open_rows = {r[0] for r in sql(pg_db, "SELECT corr FROM open_tx")}
    assert acked <= open_rows and len(open_rows) == 50 + len(acked)
    wait_until(lambda: summed([a, b], "syncwatch_transactions_overdue", **TX) == len(open_rows), 5, "overdue")
    assert summed([a, b], "syncwatch_transactions_pending", **TX) == len(open_rows)
    assert summed([a, b], "syncwatch_transactions_total", outcome="expired", **TX) == 0
    assert set(codes.values()) == {200}  # a follower hands off without the lease


def test_the_backlog_shows_what_a_stalled_leader_cannot_apply(replicas, pg_db):
    """The ledger tables locked (an operator's LOCK TABLE): the leader keeps its lease but cannot
    apply; the followers keep answering 200, and the leader's backlog gauge shows what waits."""
    a, b = replicas(2)
    at = now() - 1
    with psycopg.connect(dsn(pg_db)) as locker:
        locker.execute("LOCK TABLE open_tx IN ACCESS EXCLUSIVE MODE")
        for i in range(5):
            assert send(b, [source(f"w-{i}-{k}", at) for k in range(10)]) == 200
        wait_until(lambda: a.metric("syncwatch_handoff_backlog_spans") == 50, 10, "backlog 50 while stalled")
        assert a.metric("syncwatch_leader") == 1
    wait_until(lambda: a.metric("syncwatch_handoff_backlog_spans") == 0, 15, "backlog gone")
    wait_until(lambda: a.metric("syncwatch_transactions_pending", **TX) == 50, 5, "all applied")


def test_the_same_batch_at_both_replicas_at_the_same_moment_counts_once(replicas, pg_db):
    a, b = replicas(2)
    t0 = now() - 30
    rounds = 20
    for i in range(rounds):
        batch = [
            span("source", f"D-{i}", t0),
            span("confirm", f"D-{i}", t0 + 4, **{"syncwatch.idempotency_key": f"k-{i}"}),
            span("source", f"O-{i}", t0),  # stays open: overdue
        ]
        body = stage_request(batch).SerializeToString()
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda sc=sc: answers.append(post(sc.otlp_http + "/v1/traces", body)[0]))
            for sc in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert answers == [200, 200]
    wait_until(lambda: sql(pg_db, "SELECT count(*) FROM handoff") == [(0,)], 10, "handoff drained")
    wait_until(lambda: summed([a, b], "syncwatch_transactions_overdue", **TX) == rounds, 5, "overdue")
    both = [a, b]
    assert summed(both, "syncwatch_transactions_total", outcome="confirmed", **TX) == rounds
    assert summed(both, "syncwatch_sync_lag_seconds_count", **TX) == rounds
    assert summed(both, "syncwatch_sync_lag_seconds_sum", **TX) == pytest.approx(4.0 * rounds, abs=1e-3)
    assert summed(both, "syncwatch_duplicate_applies_total", flow="orders", destination="erp") == 0
    assert summed(both, "syncwatch_transactions_pending", **TX) == rounds
    assert sql(pg_db, "SELECT count(*), max(applies) FROM applies") == [(rounds, 1)]


def test_idle_replicas_are_not_ready_while_the_database_is_away(replicas, pg_db):
    """README: a follower is ready while it can write the handoff table. Without traffic neither
    replica found out: both answered /readyz 200 through a database outage."""
    proxy = TcpProxy(PG_HOST, PG_PORT).start()
    try:
        a, b = replicas(2, port=proxy.port)
        proxy.stop()  # every connection cut, new ones refused
        wait_until(lambda: b.get("/readyz")[0] == 503, 10, "the idle follower not ready")
        wait_until(lambda: a.get("/readyz")[0] == 503, 10, "the idle leader not ready")
        assert b"ledger not writable" in b.get("/readyz")[1]
        proxy.start()
        wait_until(lambda: a.get("/readyz")[0] == 200 and b.get("/readyz")[0] == 200, 20, "ready again")
        wait_until(lambda: summed([a, b], "syncwatch_leader") == 1, 15, "one leader again")
    finally:
        proxy.close()
