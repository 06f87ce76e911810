"""The ledger under failure and hostile data, in-process with a fake clock and a fresh registry:
a failed write leaves memory as the database is (a retry is recorded, not taken as already known),
expiry survives a held write lock, and span data cannot grow label sets or per-request cost."""

from __future__ import annotations

import math
import os
import sqlite3
import time

import orjson
import pytest
from otlp_raw import stage_request
from prometheus_client import CollectorRegistry

from syncwatch.config.models import Config
from syncwatch.intake.decode import PROTOBUF, decode_traces
from syncwatch.intake.extract import SpanExtractor
from syncwatch.ledger.records import Event
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_SOURCE
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

T0 = 1_790_000_000.0


def ev(
    stage, corr, at, flow="orders", source="storefront", dest="erp", attempt=None, code=None, idem=None, changed=None
):
    """An event, as extraction builds it."""
    return Event(
        os.urandom(16),
        os.urandom(8),
        corr,
        flow,
        stage,
        source,
        dest,
        at - 0.1,
        at,
        at if changed is None and stage == STAGE_SOURCE else changed,
        attempt,
        code,
        None,
        idem,
        at,
    )


def make(tmp_path, now, **cfg):
    config = Config.model_validate({"storage": {"data_dir": str(tmp_path)}, **cfg})
    metrics = Metrics(CollectorRegistry())
    return Ledger(config, metrics, clock=lambda: now[0]), metrics


def value(metrics, name, **labels):
    v = metrics.registry.get_sample_value(name, labels)
    return 0 if v is None else v


def rows(ledger, table):
    db = sqlite3.connect(ledger.config.storage.ledger_path)
    try:
        return db.execute(f"SELECT corr, dest, flow FROM {table} ORDER BY corr").fetchall()
    finally:
        db.close()


def test_a_batch_that_fails_on_a_full_database_is_recorded_when_retried(tmp_path):
    """SQLITE_FULL rolls the transaction back by itself; memory must follow, or the retry of the very
    same spans finds them 'already known', is acknowledged, and is never written."""
    now = [T0]
    ledger, metrics = make(tmp_path, now)
    ledger.record([ev(STAGE_SOURCE, "warmup", T0)])
    pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
    batch = [ev(STAGE_SOURCE, f"o-{i:04d}-" + "x" * 200, T0) for i in range(500)]
    ledger.conn.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: a full disk
    with pytest.raises(sqlite3.Error, match="full"):
        ledger.record(batch)
    assert not ledger.conn.in_transaction
    assert (
        len(ledger.pending) == 1
        and value(metrics, "syncwatch_transactions_pending", flow="orders", source="storefront", destination="erp") == 1
    )
    with pytest.raises(sqlite3.Error, match="full"):
        ledger.record(batch)  # the exporter retries while the disk is still full
    ledger.conn.execute("PRAGMA max_page_count=1073741823")  # space again
    ledger.record(batch)
    assert len(rows(ledger, "open_tx")) == 501
    assert (
        value(metrics, "syncwatch_transactions_pending", flow="orders", source="storefront", destination="erp") == 501
    )
    ledger.close()


def test_expiry_on_a_full_database_counts_nothing_it_did_not_write(tmp_path):
    now = [T0]
    ledger, metrics = make(
        tmp_path, now, flows={"orders": {"deadline": "10s"}}, storage={"data_dir": str(tmp_path), "expire_after": "60s"}
    )
    ledger.record([ev(STAGE_SOURCE, f"o-{i}-" + "y" * 300, T0) for i in range(300)])
    ledger.tick(T0 + 11)  # overdue
    assert (
        value(metrics, "syncwatch_transactions_overdue", flow="orders", source="storefront", destination="erp") == 300
    )
    pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
    ledger.conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.Error, match="full"):
        ledger.tick(T0 + 61)
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert value(metrics, "syncwatch_transactions_total", outcome="expired", **tx) == 0
    assert len(rows(ledger, "open_tx")) == 300 and rows(ledger, "closed_tx") == []
    assert value(metrics, "syncwatch_transactions_pending", **tx) == 300
    ledger.conn.execute("PRAGMA max_page_count=1073741823")
    ledger.tick(T0 + 62)  # overdue again (memory was rebuilt), then due for expiry
    ledger.tick(T0 + 63)
    assert value(metrics, "syncwatch_transactions_total", outcome="expired", **tx) == 300
    assert len(rows(ledger, "closed_tx")) == 300 and rows(ledger, "open_tx") == []
    assert value(metrics, "syncwatch_transactions_pending", **tx) == 0
    assert value(metrics, "syncwatch_transactions_overdue", **tx) == 0
    ledger.close()


def test_due_expiries_happen_once_another_process_releases_the_write_lock(tmp_path):
    now = [T0]
    ledger, metrics = make(
        tmp_path, now, flows={"orders": {"deadline": "10s"}}, storage={"data_dir": str(tmp_path), "expire_after": "60s"}
    )
    ledger.conn.execute("PRAGMA busy_timeout=50")
    ledger.record([ev(STAGE_SOURCE, f"o-{i}", T0) for i in range(20)])
    ledger.tick(T0 + 11)
    other = sqlite3.connect(ledger.config.storage.ledger_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ledger.tick(T0 + 61)
    other.execute("ROLLBACK")
    other.close()
    ledger.tick(T0 + 62)
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert value(metrics, "syncwatch_transactions_total", outcome="expired", **tx) == 20
    assert len(rows(ledger, "closed_tx")) == 20 and not ledger.pending
    ledger.close()


def test_a_retry_storm_on_one_transaction_keeps_a_bounded_timeline(tmp_path):
    now = [T0]
    ledger, metrics = make(tmp_path, now, limits={"max_timeline_attempts": 50})
    ledger.record([ev(STAGE_SOURCE, "storm", T0)])
    attempts = [ev(STAGE_ATTEMPT, "storm", T0 + i, attempt=i + 1, code="429") for i in range(2000)]
    for i in range(0, 2000, 400):
        ledger.record(attempts[i : i + 400])
    ledger.record(attempts[1990:2000])  # redelivered: recent spans are recognised
    fd = dict(flow="orders", destination="erp")
    assert value(metrics, "syncwatch_attempts_total", status_code="429", **fd) == 2000
    assert value(metrics, "syncwatch_retries_total", **fd) == 1999
    assert value(metrics, "syncwatch_retry_backoff_seconds_count", **fd) == 1999
    db = sqlite3.connect(ledger.config.storage.ledger_path)
    n, timeline = db.execute("SELECT attempts, timeline FROM open_tx WHERE corr='storm'").fetchone()
    doc = orjson.loads(timeline)
    assert n == 2000 and len(doc["attempts"]) == 50 and doc["omitted"] == 1950
    assert [a[4] for a in doc["attempts"][:11]] == [*range(1, 11), 1961]
    ledger.close()

    # After a restart the count goes on from what was stored, and the confirm closes with all 2000.
    ledger, metrics = make(tmp_path, now, limits={"max_timeline_attempts": 50})
    ledger.load()
    ledger.record([ev(STAGE_ATTEMPT, "storm", T0 + 3000, attempt=2001, code="200")])
    ledger.record([ev(STAGE_CONFIRM, "storm", T0 + 3001)])
    n, timeline = db.execute("SELECT attempts, timeline FROM closed_tx WHERE corr='storm'").fetchone()
    assert n == 2001 and orjson.loads(timeline)["omitted"] == 1951
    assert value(metrics, "syncwatch_delivery_attempts_sum", **fd) == 2001
    db.close()
    ledger.close()


def test_unconfigured_flows_systems_and_codes_fold_into_bounded_labels(tmp_path):
    now = [T0]
    ledger, metrics = make(
        tmp_path, now, limits={"max_unknown_flows": 2, "max_unknown_systems": 3, "max_response_codes": 2}
    )
    events = [ev(STAGE_ATTEMPT, f"c-{i}", T0, flow=f"flow-{i}", dest="erp", code="200") for i in range(50)]
    events += [ev(STAGE_ATTEMPT, f"d-{i}", T0, dest=f"dest-{i}", code=str(i)) for i in range(50)]
    events += [ev(STAGE_ATTEMPT, f"e-{i}", T0, code=f"NACK-{i}") for i in range(10)]
    events += [ev(STAGE_ATTEMPT, "f", T0, code="99999"), ev(STAGE_ATTEMPT, "g", T0, code="404")]
    ledger.record(events)
    samples = [
        s
        for f in metrics.registry.collect()
        if f.name == "syncwatch_attempts"
        for s in f.samples
        if s.name == "syncwatch_attempts_total"
    ]
    flows = {s.labels["flow"] for s in samples}
    dests = {s.labels["destination"] for s in samples if s.labels["flow"] == "orders"}
    codes = {s.labels["status_code"] for s in samples}
    assert flows == {"orders", "flow-0", "flow-1", "other"}
    assert dests == {"erp", "dest-0", "dest-1", "other"}  # the third unconfigured system is the source
    assert codes == {"200", "invalid", "NACK-0", "NACK-1", "other", "404"}
    assert sum(s.value for s in samples) == 112  # every attempt counted, in a bounded set of series
    assert value(metrics, "syncwatch_label_overflow_total", label="flow") > 0
    assert value(metrics, "syncwatch_label_overflow_total", label="system") > 0
    assert value(metrics, "syncwatch_label_overflow_total", label="status_code") > 0
    # The ledger keeps what the spans said.
    assert ("c-40", "erp", "flow-40") in rows(ledger, "open_tx")
    ledger.close()


def test_an_idempotency_key_is_scoped_to_its_destination_and_flow(tmp_path):
    now = [T0]
    ledger, metrics = make(tmp_path, now, flows={"customers": {"destinations": ["storefront", "erp"]}})
    ledger.record([ev(STAGE_SOURCE, "cust-1", T0, flow="customers", source="crm", dest=None)])
    ledger.record(
        [
            ev(STAGE_CONFIRM, "cust-1", T0 + 1, flow="customers", source="crm", dest="erp", idem="k-1"),
            ev(STAGE_CONFIRM, "cust-1", T0 + 2, flow="customers", source="crm", dest="storefront", idem="k-1"),
        ]
    )
    ledger.record([ev(STAGE_CONFIRM, "ord-1", T0 + 2, idem="k-1")])
    assert not ledger.pending
    assert value(metrics, "syncwatch_duplicate_applies_total", flow="customers", destination="storefront") == 0
    assert value(metrics, "syncwatch_duplicate_applies_total", flow="orders", destination="erp") == 0
    ledger.record([ev(STAGE_CONFIRM, "ord-1", T0 + 3, idem="k-1")])  # a real duplicate
    assert value(metrics, "syncwatch_duplicate_applies_total", flow="orders", destination="erp") == 1
    ledger.close()


def test_a_duplicate_confirm_in_the_batch_of_the_first_is_in_the_record(tmp_path):
    now = [T0]
    ledger, metrics = make(tmp_path, now)
    ledger.record([ev(STAGE_SOURCE, "o-1", T0), ev(STAGE_SOURCE, "o-2", T0)])
    ledger.record(
        [
            ev(STAGE_CONFIRM, "o-1", T0 + 1),
            ev(STAGE_CONFIRM, "o-1", T0 + 2),  # stored, then closed
            ev(STAGE_CONFIRM, "o-3", T0 + 1),
            ev(STAGE_CONFIRM, "o-3", T0 + 2),
        ]
    )  # never stored as open
    db = sqlite3.connect(ledger.config.storage.ledger_path)
    for corr in ("o-1", "o-3"):
        doc = orjson.loads(db.execute("SELECT timeline FROM closed_tx WHERE corr=?", (corr,)).fetchone()[0])
        assert len(doc["duplicates"]) == 1, corr
    db.close()
    assert value(metrics, "syncwatch_duplicate_applies_total", flow="orders", destination="erp") == 2
    ledger.close()


def test_a_schema_4_ledger_gets_scoped_idempotency_keys(tmp_path):
    now = [T0]
    ledger, _ = make(tmp_path, now)
    ledger.record([ev(STAGE_CONFIRM, "o-1", T0, idem="k")])
    ledger.close()
    db = sqlite3.connect(tmp_path / "ledger.db")
    db.executescript("""
        CREATE TABLE applies_v4 AS SELECT * FROM applies; DROP TABLE applies;
        CREATE TABLE applies(idem TEXT NOT NULL PRIMARY KEY, corr TEXT NOT NULL, dest TEXT NOT NULL,
            flow TEXT NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL, applies INTEGER NOT NULL,
            first_span BLOB, last_span BLOB) WITHOUT ROWID;
        INSERT INTO applies SELECT * FROM applies_v4; DROP TABLE applies_v4;
        UPDATE meta SET value='4' WHERE key='schema_version';""")
    db.close()
    ledger, metrics = make(tmp_path, now)
    ledger.record([ev(STAGE_CONFIRM, "o-1", T0 + 1, idem="k")])  # a duplicate of the pre-upgrade apply
    ledger.record([ev(STAGE_CONFIRM, "o-1", T0 + 1, dest="wms", idem="k")])  # another destination: not one
    assert value(metrics, "syncwatch_duplicate_applies_total", flow="orders", destination="erp") == 1
    assert value(metrics, "syncwatch_duplicate_applies_total", flow="orders", destination="wms") == 0
    ledger.close()


def _extract(spans):
    request = stage_request(spans)
    return SpanExtractor(["correlation_id"], 64).extract(
        decode_traces(request.SerializeToString(), PROTOBUF), time.time()
    )


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"syncwatch.source.changed_at": "nan"}, "changed_at"),
        ({"syncwatch.source.changed_at": "inf"}, "changed_at"),
        ({"syncwatch.source.changed_at": "-1e11"}, "changed_at"),
        ({"syncwatch.source.changed_at": "1e300"}, "changed_at"),
        ({"syncwatch.source.changed_at": "0001-01-01T00:00:00Z"}, "changed_at"),
        ({"syncwatch.stage": "attempt", "http.request.resend_count": 2**62}, "resend_count"),
        ({"syncwatch.stage": "attempt", "http.request.resend_count": str(2**70)}, "resend_count"),
        ({"syncwatch.stage": "attempt", "http.request.resend_count": "inf"}, "resend_count"),
        ({"syncwatch.stage": "attempt", "http.request.resend_count": -5}, "resend_count"),
        ({"correlation_id": "x" * 65}, "longer than 64"),
        ({"syncwatch.flow": "f" * 129}, "syncwatch.flow longer"),
        ({"syncwatch.stage": "confirm", "syncwatch.idempotency_key": "k" * 513}, "idempotency_key longer"),
    ],
)
def test_an_invalid_value_rejects_its_span_only(attrs, message):
    good = {"_start": T0, "correlation_id": "ok-1", "syncwatch.stage": "source", "syncwatch.flow": "orders"}
    bad = {**good, "correlation_id": "bad-1", "syncwatch.destination": "erp", **attrs}
    out = _extract([good, bad, {**good, "correlation_id": "ok-2"}])
    assert [e[2] for e in out.events] == ["ok-1", "ok-2"]
    assert out.rejected == 1 and message in out.error_message, out.error_message


def test_a_double_valued_time_must_be_finite():
    request = stage_request(
        [{"_start": T0, "correlation_id": "d", "syncwatch.stage": "source", "syncwatch.flow": "orders"}]
    )
    kv = request.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key, kv.value.double_value = "syncwatch.source.changed_at", math.nan
    out = SpanExtractor(["correlation_id"]).extract(decode_traces(request.SerializeToString(), PROTOBUF), T0)
    assert out.rejected == 1 and not out.events
