"""Acknowledged spans survive kill -9; pending and overdue transactions are tracked after restart."""

import sqlite3
import threading
import time
import uuid

import pytest
from otel_helpers import Integration
from otlp_raw import post, stage_request


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
            req = stage_request(
                [
                    {
                        "_start": changed,
                        "syncwatch.stage": "source",
                        "syncwatch.flow": "orders",
                        "syncwatch.source": "storefront",
                        "correlation_id": c,
                    }
                    for c in ids
                ]
            )
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


def test_ledger_file_is_checkpointed_while_intake_runs(make_sidecar):
    """The WAL is copied into ledger.db by the checkpoint thread, long before the writer's own
    backstop (ledger.WAL_AUTOCHECKPOINT_PAGES) would, so the writer never stalls on it."""
    from syncwatch.ledger.sqlite_store import WAL_AUTOCHECKPOINT_PAGES

    sc = make_sidecar({"flows": {"orders": {"destinations": ["erp"], "deadline": "1h"}}}, name="sc")
    db_file = sc.workdir / "data" / "ledger.db"
    empty_size = db_file.stat().st_size
    now = time.time()
    for i in range(20):
        req = stage_request(
            [
                {
                    "_start": now,
                    "syncwatch.stage": "source",
                    "syncwatch.flow": "orders",
                    "syncwatch.source": "storefront",
                    "correlation_id": f"{uuid.uuid4()}",
                }
                for _ in range(250)
            ]
        )
        assert post(sc.otlp_http + "/v1/traces", req.SerializeToString())[0] == 200
    wal_pages = (sc.workdir / "data" / "ledger.db-wal").stat().st_size // 4096
    assert wal_pages < WAL_AUTOCHECKPOINT_PAGES  # the backstop cannot have run
    deadline = time.monotonic() + 5
    while db_file.stat().st_size < empty_size + 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db_file.stat().st_size >= empty_size + 1_000_000, (empty_size, db_file.stat().st_size)
    assert sc.metric("syncwatch_transactions_pending", flow="orders", source="storefront", destination="erp") == 5000


def test_a_schema_3_ledger_is_migrated_and_its_closed_transactions_still_found(make_sidecar):
    """A ledger written by the previous release (schema 3: closed_tx indexed by its text key) is
    migrated at start; a confirm recorded before the upgrade still gets its lag from a late source."""
    from syncwatch.ledger.schema import DDL

    sc = make_sidecar(name="sc", start=False)
    data = sc.workdir / "data"
    data.mkdir(parents=True)
    v3 = (
        DDL.replace(
            "    timeline     TEXT,\n    corr_hash    INTEGER NOT NULL  -- corr_hash(corr)\n", "    timeline     TEXT\n"
        )
        .replace(
            "CREATE INDEX IF NOT EXISTS closed_tx_by_hash ON closed_tx(corr_hash);",
            "CREATE UNIQUE INDEX IF NOT EXISTS closed_tx_by_key ON closed_tx(corr, dest, flow);",
        )
        .replace(
            "CREATE INDEX IF NOT EXISTS closed_tx_problems ON closed_tx(outcome, closed_at) WHERE outcome <> 'confirmed';",
            "CREATE INDEX IF NOT EXISTS closed_tx_by_outcome ON closed_tx(outcome, closed_at);",
        )
    )
    assert "corr_hash    INTEGER" not in v3 and "closed_tx_by_key" in v3 and "closed_tx_by_outcome" in v3
    t0 = time.time() - 30
    db = sqlite3.connect(data / "ledger.db")
    db.executescript(v3)
    db.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    db.execute(
        "INSERT INTO closed_tx (corr, dest, flow, outcome, closed_at, close_span, attempts, timeline) "
        "VALUES ('order-77', 'erp', 'orders', 'confirmed', ?, ?, 0, NULL)",
        (t0 + 8, b"\x01" * 8),
    )
    db.commit()
    db.close()

    sc.start()
    it = Integration(sc)
    it.source("order-77", "orders", t0)
    it.close()
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert sc.metric("syncwatch_sync_lag_seconds_sum", **tx) == pytest.approx(8.0, abs=1e-3)
    assert sc.metric("syncwatch_transactions_pending", None, **tx) in (None, 0)
    db = sqlite3.connect(data / "ledger.db")
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("5",)
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='closed_tx'")}
    assert indexes == {"closed_tx_by_hash", "closed_tx_problems"}
    db.close()


def test_a_ledger_of_an_unknown_schema_refuses_to_start_with_a_message(make_sidecar):
    """A ledger written by a newer syncwatch (or not a ledger) stops the start with one line, not a traceback."""
    import subprocess
    import sys

    sc = make_sidecar(name="future", start=False)
    data = sc.workdir / "data"
    data.mkdir(parents=True)
    db = sqlite3.connect(data / "ledger.db")
    db.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema_version', '99');"
    )
    db.close()
    out = subprocess.run(
        [sys.executable, "-m", "syncwatch", "run", "--config", str(sc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "cannot start" in out.stderr and "schema version 99" in out.stderr
    assert "Traceback" not in out.stderr
