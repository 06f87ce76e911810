"""Payload audits inside one SnapshotIntake (real SQLite store, real redactor): labels bounded by
config, state bounded and swept with the snapshots, config mistakes named; and a property test
holding the tracker's conflicts and violations to a brute-force recomputation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from snapshot_data import Clock, make_request, sample

from syncwatch.audit import state
from syncwatch.audit.ownership import FlowMap
from syncwatch.audit.store import report_rows
from syncwatch.audit.tracker import CONFLICT, VIOLATION, Write, WriteTracker
from syncwatch.config.audit import FlowAudit
from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots import SnapshotIntake

T0 = 1_800_000_000.0
FLOWS = {"customers": {"destinations": ["storefront", "erp"], "deadline": "6h", "exactly_once": False}}
AUDIT = {
    "flows": {
        "customers": {
            "record_key": "$.id",
            "sync_window": "1h",
            "fields": {"email": {"path": "$.email", "owner": "storefront"}},
        }
    }
}


def _intake(tmp_path, audit=AUDIT, clock=None):
    cfg = Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}, "flows": FLOWS, "audit": audit})
    metrics = Metrics()
    return SnapshotIntake(cfg, metrics, clock=clock or Clock(T0)), metrics


def _req(corr: str, source: str, body: dict, t: float, flow: str = "customers"):
    return make_request(
        {
            "corr": corr,
            "direction": "request",
            "body": json.dumps(body),
            "time": t,
            "attrs": {"syncwatch.flow": flow, "syncwatch.source": source},
        }
    )


def test_writer_and_field_labels_come_from_config_only(tmp_path):
    intake, metrics = _intake(tmp_path, {"flows": {"customers": {"record_key": "$.id"}}})

    async def go():
        await intake.start()
        await intake.export_logs(_req("a", "storefront", {"id": 1, "x": "1"}, T0))
        # A writer nobody configured, and a payload with a new field name: no new label values.
        await intake.export_logs(_req("b", "evil\nwriter", {"id": 1, "x": "2", "brand_new_key": 7}, T0 + 1))
        await intake.stop()

    asyncio.run(go())
    got = {
        tuple(s.labels.values())
        for fam in metrics.registry.collect()
        if fam.name == "syncwatch_audit_conflicts"
        for s in fam.samples
        if s.name.endswith("_total")
    }
    assert got == {("customers", "unmapped", "other")}
    assert sample(metrics, "syncwatch_audit_writes_total", flow="customers", field="unmapped", writer="other") == 3
    assert sample(metrics, "syncwatch_audit_writes_total", flow="customers", field="unmapped", writer="storefront") == 2
    assert sample(metrics, "syncwatch_audit_conflicts_total", flow="customers", field="unmapped", writer="other") == 1


def test_state_is_capped_and_swept_with_the_snapshot_retention(tmp_path):
    clock = Clock(T0)
    intake, metrics = _intake(tmp_path, {**AUDIT, "max_tracked_fields": 3}, clock)

    async def go():
        await intake.start()
        for i in range(5):
            await intake.export_logs(_req(f"c{i}", "storefront", {"id": i, "email": f"u{i}@example.com"}, T0))
        intake.auditor.wait()
        assert intake.auditor.tracker.fields == 3
        assert sample(metrics, "syncwatch_audit_evicted_total") == 2
        # Past the retention the sweep forgets every field: a later ERP write finds nothing to conflict with.
        clock.t = T0 + 73 * 3600
        await intake.sweep_now()
        assert intake.auditor.tracker.fields == 0
        await intake.export_logs(_req("late", "erp", {"id": 4, "email": "x@example.com"}, clock.t))
        await intake.export_logs(_req("nokey", "erp", {"email": "x@example.com"}, clock.t))
        intake.auditor.wait()
        await intake.stop()

    asyncio.run(go())
    assert sample(metrics, "syncwatch_audit_conflicts_total", flow="customers", field="email", writer="erp") == 0
    assert sample(metrics, "syncwatch_audit_skipped_total", reason="no_record_key") == 1


def _tracked_rows(tmp_path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(tmp_path / "data" / "audit.db")
    try:
        return conn.execute("SELECT flow, record FROM tracked ORDER BY record").fetchall()
    finally:
        conn.close()


def test_state_on_disk_is_capped_and_swept_like_the_state_in_memory(tmp_path):
    clock = Clock(T0)
    intake, metrics = _intake(tmp_path, {**AUDIT, "max_tracked_fields": 3}, clock)

    async def first():
        await intake.start()
        for i in range(5):
            await intake.export_logs(_req(f"c{i}", "storefront", {"id": i, "email": f"u{i}@example.com"}, T0 + i))
        intake.auditor.wait()
        await intake.stop()

    asyncio.run(first())
    # The two least recently written records were evicted from memory and from disk.
    assert _tracked_rows(tmp_path) == [("customers", "2"), ("customers", "3"), ("customers", "4")]
    assert sample(metrics, "syncwatch_audit_evicted_total") == 2

    # A new process reads them back; one is re-written by the ERP (a conflict), one more record
    # pushes the oldest out.
    clock.t = T0 + 3600
    intake2, metrics2 = _intake(tmp_path, {**AUDIT, "max_tracked_fields": 3}, clock)

    async def second():
        await intake2.start()
        intake2.auditor.wait()
        assert intake2.auditor.tracker.fields == 3
        await intake2.export_logs(_req("e3", "erp", {"id": 3, "email": "changed@example.com"}, T0 + 1800))
        await intake2.export_logs(_req("c9", "storefront", {"id": 9, "email": "u9@example.com"}, T0 + 1801))
        intake2.auditor.wait()
        assert _tracked_rows(tmp_path) == [("customers", "3"), ("customers", "4"), ("customers", "9")]
        # Past the retention (72 h) the sweep empties both.
        clock.t = T0 + 1801 + 72 * 3600 + 1
        await intake2.sweep_now()
        assert intake2.auditor.tracker.fields == 0
        assert _tracked_rows(tmp_path) == []
        await intake2.stop()

    asyncio.run(second())
    assert sample(metrics2, "syncwatch_audit_conflicts_total", flow="customers", field="email", writer="erp") == 1
    assert sample(metrics2, "syncwatch_audit_violations_total", flow="customers", field="email", writer="erp") == 1
    assert sample(metrics2, "syncwatch_audit_evicted_total") == 1


def test_state_of_a_flow_no_longer_audited_is_dropped_at_start(tmp_path):
    intake, _ = _intake(tmp_path)

    async def go(i):
        await i.start()
        await i.export_logs(_req("c1", "storefront", {"id": 1, "email": "a@example.com"}, T0))
        i.auditor.wait()
        await i.stop()

    asyncio.run(go(intake))
    assert _tracked_rows(tmp_path) == [("customers", "1")]
    other = {"flows": {"orders": {"record_key": "$.id"}}}
    intake2, _ = _intake(tmp_path, other)
    asyncio.run(intake2.start())
    intake2.auditor.wait()
    assert intake2.auditor.tracker.fields == 0
    asyncio.run(intake2.stop())
    assert _tracked_rows(tmp_path) == []


ORDERS = {"orders": {"destinations": ["erp"], "deadline": "5m"}}


@pytest.mark.parametrize("ignore", [False, True])
def test_a_retry_differing_only_in_ignored_fields_is_no_key_reuse(tmp_path, ignore):
    flow = {"record_key": "$.order_id", "idempotency_key": "$.key"}
    if ignore:
        flow["idempotency_ignore_fields"] = ["$.sent_at", "$.meta.request_id", "$.lines[*].priced_at"]
    cfg = Config.model_validate(
        {"storage": {"data_dir": str(tmp_path / "data")}, "flows": ORDERS, "audit": {"flows": {"orders": flow}}}
    )
    metrics = Metrics()
    intake = SnapshotIntake(cfg, metrics, clock=Clock(T0))

    def order(sent_at: float, request_id: str, total: str) -> dict:
        lines = [{"sku": "A", "priced_at": sent_at}, {"sku": "B", "priced_at": sent_at + 1}]
        return {
            "order_id": "O1",
            "key": "K1",
            "total": total,
            "sent_at": sent_at,
            "meta": {"request_id": request_id},
            "lines": lines,
        }

    async def go():
        await intake.start()
        await intake.export_logs(_req("O1", "storefront", order(T0, "req-1", "10.00"), T0, "orders"))
        # The retry: a new timestamp and request ID, the same order.
        await intake.export_logs(_req("O1", "storefront", order(T0 + 5, "req-2", "10.00"), T0 + 5, "orders"))
        intake.auditor.wait()
        after_retry = sample(metrics, "syncwatch_audit_idempotency_key_reuse_total", flow="orders")
        # Not a retry: the total changed under the same key.
        await intake.export_logs(_req("O1", "storefront", order(T0 + 9, "req-3", "12.00"), T0 + 9, "orders"))
        intake.auditor.wait()
        await intake.stop()
        return after_retry

    after_retry = asyncio.run(go())
    total = sample(metrics, "syncwatch_audit_idempotency_key_reuse_total", flow="orders")
    # Without the list the retry is (wrongly) reuse; with it only the changed total is.
    assert (after_retry, total) == ((0, 1) if ignore else (1, 2))


def test_key_reuse_and_duplicate_records_across_a_restart(tmp_path):
    """The idempotency keys and destination record IDs are persisted like the tracked fields."""
    flow = {"record_key": "$.order_id", "idempotency_key": "$.key", "record_id": "$.erp_id"}
    audit = {"flows": {"orders": flow}}

    def order(corr: str, total: str, erp_id: str, t: float):
        attrs = {"syncwatch.flow": "orders", "syncwatch.source": "storefront", "syncwatch.destination": "erp"}
        return make_request(
            {
                "corr": corr,
                "direction": "request",
                "time": t,
                "attrs": attrs,
                "body": json.dumps({"order_id": corr, "key": f"K-{corr}", "total": total}),
            },
            {
                "corr": corr,
                "direction": "response",
                "time": t + 1,
                "attrs": attrs,
                "body": json.dumps({"erp_id": erp_id}),
            },
        )

    def intake():
        cfg = Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}, "flows": ORDERS, "audit": audit})
        metrics = Metrics()
        return SnapshotIntake(cfg, metrics, clock=Clock(T0 + 60)), metrics

    async def send(i, *requests):
        await i.start()
        for r in requests:
            await i.export_logs(r)
        i.auditor.wait()
        await i.stop()

    first, _ = intake()
    asyncio.run(send(first, order("O1", "10.00", "E-1", T0), order("O2", "5.00", "E-5", T0)))
    # After the restart: O1 retried with a changed total (key reuse), and confirmed into a second
    # ERP record; O2 retried unchanged into the same record (nothing to report).
    second, metrics = intake()
    asyncio.run(send(second, order("O1", "12.00", "E-2", T0 + 30), order("O2", "5.00", "E-5", T0 + 30)))
    assert sample(metrics, "syncwatch_audit_idempotency_key_reuse_total", flow="orders") == 1
    assert sample(metrics, "syncwatch_audit_duplicate_records_total", flow="orders") == 1
    conn = sqlite3.connect(tmp_path / "data" / "audit.db")
    try:
        rows = conn.execute("SELECT map, key, value, corr FROM latest WHERE map = 'record_ids' ORDER BY key").fetchall()
    finally:
        conn.close()
    assert rows == [
        ("record_ids", '["orders","O1","erp"]', "E-2", "O1"),
        ("record_ids", '["orders","O2","erp"]', "E-5", "O2"),
    ]


def test_a_failed_write_of_audit_db_is_retried_with_the_next_batch(tmp_path, caplog):
    intake, metrics = _intake(tmp_path)
    store = intake.auditor.store
    real_write = store.write
    failures = []

    def failing_write(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(*args, **kwargs)

    store.write = failing_write

    async def go():
        await intake.start()
        await intake.export_logs(_req("c1", "storefront", {"id": 1, "email": "a@example.com"}, T0))
        intake.auditor.wait()
        assert failures  # refused: kept in memory, written with the next batch (or the next sweep)
        await intake.export_logs(_req("c2", "erp", {"id": 1, "email": "b@example.com"}, T0 + 1))
        intake.auditor.wait()
        await intake.stop()

    asyncio.run(go())
    assert "database or disk is full" in caplog.text and "retried with the next batch" in caplog.text
    assert _tracked_rows(tmp_path) == [("customers", "1")]
    assert sample(metrics, "syncwatch_audit_conflicts_total", flow="customers", field="email", writer="erp") == 1
    rows = report_rows(tmp_path / "data" / "audit.db", 0)
    assert [(r["writer"], r["writes"], r["conflicts"]) for r in rows] == [("erp", 1, 1), ("storefront", 1, 0)]


def test_an_unaudited_flow_costs_nothing(tmp_path):
    intake, _ = _intake(tmp_path, {})
    assert intake.auditor is None


@pytest.mark.parametrize(
    ("audit", "named"),
    [
        ({"flows": {"c": {"fields": {"a": {"path": "$.a[*]"}}}}}, "wildcard"),
        ({"flows": {"c": {"fields": {"a": {"path": "$.a", "rules": [{"owner": "x"}]}}}}}, "needs a condition"),
        (
            {"flows": {"c": {"fields": {"a": {"path": "$.a", "rules": [{"owner": "x", "from": "2026-01-01T00:00"}]}}}}},
            "timezone",
        ),
        ({"flows": {"c": {"fields": {"bad label!": {"path": "$.a"}}}}}, "metric label"),
        ({"flows": {"c": {"record_key": "customer_id"}}}, "must start with $"),
        ({"flows": {"c": {"idempotency_ignore_fields": ["$.sent_at", "request_id"]}}}, "idempotency_ignore_fields.1"),
        ({"flows": {"c": {"fields": {"a": {"path": "$.a", "rules": [{"owner": "x", "path": "$.r"}]}}}}}, "go together"),
    ],
)
def test_bad_audit_config_fails_naming_the_key(audit, named):
    with pytest.raises(ValidationError) as exc:
        Config.model_validate({"audit": audit})
    text = str(exc.value)
    assert "audit.flows.c" in text and named in text


# -- property: the tracker against a brute-force recomputation --------------------------------------

PROMO = (T0 + 30, T0 + 60)
MAP = FlowAudit.model_validate(
    {
        "record_key": "$.id",
        "sync_window": 20,
        "fields": {
            "price": {
                "path": "$.price",
                "owner": "erp",
                "rules": [
                    {
                        "owner": "storefront",
                        "from": datetime.fromtimestamp(PROMO[0], UTC).isoformat(),
                        "until": datetime.fromtimestamp(PROMO[1], UTC).isoformat(),
                    }
                ],
            },
            "note": {"path": "$.note"},
        },
    }
)

writes_st = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(["price", "note"]),
        st.sampled_from(["erp", "storefront", "wms"]),
        st.integers(0, 100),
        st.integers(0, 2),
    ),
    max_size=40,
)


def brute_force(writes: list[tuple[str, str, str, int, int]], window: float) -> list[tuple[int, str]]:
    out = []
    for i, (rec, field, writer, t, v) in enumerate(writes):
        earlier = [(wt, j) for j, (r, f, _, wt, _) in enumerate(writes[:i]) if (r, f) == (rec, field)]
        if not earlier:
            continue
        _, j = max(earlier)  # the latest in time; among equal times the last to arrive
        _, _, pwriter, pt, pv = writes[j]
        if pv == v:
            continue
        if pwriter != writer and abs(t - pt) <= window:
            out.append((i, CONFLICT))
        owner = ("storefront" if PROMO[0] <= T0 + t < PROMO[1] else "erp") if field == "price" else None
        if owner is not None and writer != owner:
            out.append((i, VIOLATION))
    return out


@settings(max_examples=300, deadline=None)
@given(writes_st, st.integers(0, 40))
def test_conflicts_and_violations_equal_a_brute_force_recomputation(writes, restart_at):
    """With a restart anywhere in the sequence: the tracker's state goes through its on-disk
    encoding into a fresh tracker, and nothing changes."""
    fmap = FlowMap("prices", MAP, 64)
    tracker = WriteTracker(10_000)
    got = []
    for i, (rec, field, writer, t, v) in enumerate(writes):
        if i == restart_at:
            fresh = WriteTracker(10_000)
            for flow, record, fields, single in tracker.take_changes():
                if fields:
                    fresh.load(flow, record, state.decode(state.encode(fields, single)[1]))
            tracker = fresh
        body = {"id": rec, field: f"v{v}"}
        for name, _label, value, owner in fmap.values(body, T0 + t):
            w = Write("prices", rec, name, writer, T0 + t, hash(value), owner, f"c{i}")
            got += [(i, f.kind) for f in tracker.observe(w, fmap.window)]
    assert got == brute_force(writes, 20)
