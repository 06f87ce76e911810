"""Acknowledged spans survive kill -9; pending and overdue transactions are tracked after restart."""

import sqlite3
import threading
import time

from otlp_raw import post, stage_request
from otel_helpers import Integration


def test_kill9_mid_stream_loses_no_acknowledged_transaction(make_sidecar):
    config = {"flows": {"orders": {"destinations": ["erp"], "deadline": "4s"}}}
    sc = make_sidecar(config, name="sc")
    acked: list[str] = []
    stop = threading.Event()
    t_start = time.time()

    def stream():
        i = 0
        while not stop.is_set():
            # Even batches changed long ago (overdue at once), odd batches fresh (overdue after 4 s).
            changed = t_start - 60 if i % 2 == 0 else time.time()
            ids = [f"order-{i}-{j}" for j in range(50)]
            req = stage_request([{"_start": changed, "syncwatch.stage": "source", "syncwatch.flow": "orders",
                                  "syncwatch.source": "storefront", "correlation_id": c} for c in ids])
            try:
                status, _, _ = post(sc.otlp_http + "/v1/traces", req.SerializeToString(), timeout=5)
            except OSError:
                return  # the sidecar died mid-request: not acknowledged
            if status == 200:
                acked.extend(ids)
            i += 1

    thread = threading.Thread(target=stream)
    thread.start()
    while len(acked) < 2000:
        time.sleep(0.01)
    sc.kill9()
    stop.set()
    thread.join(timeout=10)
    assert len(acked) >= 2000

    db = sqlite3.connect(sc.workdir / "data" / "ledger.db")
    stored = {row[0] for row in db.execute("SELECT corr FROM open_tx WHERE flow='orders' AND dest='erp'")}
    db.close()
    missing = [c for c in acked if c not in stored]
    assert not missing, f"{len(missing)} acknowledged transactions lost, e.g. {missing[:3]}"

    sc.start()  # same data dir, same ports
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert sc.metric("syncwatch_transactions_pending", **tx) == len(stored)
    # After at most the 4 s deadline plus 2 s, every transaction is overdue again.
    sc.wait_for("syncwatch_transactions_overdue", len(stored), timeout=8, **tx)

    # Still tracked: confirming one after the restart closes it with the right outcome.
    it = Integration(sc)
    it.confirm(acked[0], "orders", "erp", time.time(), time.time())
    it.close()
    assert sc.metric("syncwatch_transactions_pending", **tx) == len(stored) - 1
    assert sc.metric("syncwatch_transactions_overdue", **tx) == len(stored) - 1
    assert sc.metric("syncwatch_transactions_total", outcome="confirmed", **tx) == 1
