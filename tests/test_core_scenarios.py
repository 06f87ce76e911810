"""Scripted integration scenarios through the real OTel SDK, with exact metric values.

Most run in-process (the `ledger` fixture: the real decode, extraction, ledger and metrics, a fake
clock, a fresh registry): they are about what the ledger makes of the spans. The first scenario over
both transports, and the promise that overdue shows within two seconds of the deadline on the wall
clock, run through a real sidecar subprocess."""

import sqlite3

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otel_helpers import Integration, now
from otlp_raw import stage_request


@pytest.fixture(params=["http", "grpc"])
def transport(request):
    return request.param


# Every scenario on both ledger backends: SQLite (the default) and PostgreSQL (storage.backend), the
# same exact figures from each.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.databases)])
def storage(request):
    """storage.* for a workdir on this backend; PostgreSQL's tables are emptied first."""
    if request.param == "sqlite":
        return lambda workdir: {}
    from pg_support import reset, storage_config

    db = request.getfixturevalue("pg_db")
    reset(db)
    return lambda workdir: storage_config(db, workdir)


@pytest.fixture
def make_ledger(make_ledger, storage, tmp_path):
    def make(config=None, **kw):
        cfg = dict(config or {})
        cfg["storage"] = {**storage(tmp_path / "pg"), **cfg.get("storage", {})}
        return make_ledger(cfg, **kw)

    return make


@pytest.fixture
def make_sidecar(make_sidecar, storage, tmp_path):
    def make(config=None, env=None, name="sidecar", start=True):
        cfg = dict(config or {})
        cfg["storage"] = {**storage(tmp_path / name / "pg"), **cfg.get("storage", {})}
        return make_sidecar(cfg, env, name, start)

    return make


def closed_rows(ledger, corr: str) -> list[tuple]:
    """(outcome, attempts) of the closed rows of one correlation ID, from whichever backend holds them."""
    if ledger.config.storage.backend == "sqlite":
        db = sqlite3.connect(ledger.ledger_path)
        try:
            return db.execute("SELECT outcome, attempts FROM closed_tx WHERE corr = ?", (corr,)).fetchall()
        finally:
            db.close()
    import psycopg

    with psycopg.connect(ledger.config.storage.postgresql.dsn_file.read_text().strip()) as conn:
        return [tuple(r) for r in conn.execute("SELECT outcome, attempts FROM closed_tx WHERE corr = %s", (corr,))]


def test_orders_confirmed_after_429_retries(sidecar, transport):
    it = Integration(sidecar, transport)
    t0 = now() - 60
    it.source("order-1001", "orders", t0)
    it.attempt("order-1001", "orders", "erp", t0 + 1, t0 + 1.5, code=429)
    it.attempt("order-1001", "orders", "erp", t0 + 3.5, t0 + 4, code=429, resend=1)
    it.attempt("order-1001", "orders", "erp", t0 + 6, t0 + 6.5, code=200, resend=2)
    it.confirm("order-1001", "orders", "erp", t0 + 6.5, t0 + 12.0)
    it.close()
    m = sidecar.metrics()
    tx = {"flow": "orders", "source": "storefront", "destination": "erp"}
    key = lambda name, **l: (name, frozenset(l.items()))  # noqa: E731 -- a one-line key function reads best inline
    assert m[key("syncwatch_transactions_total", outcome="confirmed", **tx)] == 1
    assert m[key("syncwatch_transactions_pending", **tx)] == 0
    assert m[key("syncwatch_sync_lag_seconds_count", **tx)] == 1
    assert m[key("syncwatch_sync_lag_seconds_sum", **tx)] == pytest.approx(12.0, abs=1e-3)
    assert m[key("syncwatch_sync_lag_seconds_bucket", le="10.0", **tx)] == 0
    assert m[key("syncwatch_sync_lag_seconds_bucket", le="30.0", **tx)] == 1
    assert m[key("syncwatch_attempts_total", flow="orders", destination="erp", status_code="429")] == 2
    assert m[key("syncwatch_attempts_total", flow="orders", destination="erp", status_code="200")] == 1
    assert m[key("syncwatch_retries_total", flow="orders", destination="erp")] == 2
    assert m[key("syncwatch_delivery_attempts_sum", flow="orders", destination="erp")] == 3
    # Backoffs: 3.5-1.5 = 2.0 and 6.0-4.0 = 2.0
    assert m[key("syncwatch_retry_backoff_seconds_count", flow="orders", destination="erp")] == 2
    assert m[key("syncwatch_retry_backoff_seconds_sum", flow="orders", destination="erp")] == pytest.approx(
        4.0, abs=1e-3
    )
    assert m[key("syncwatch_spans_total", result="correlated")] == 5
    assert m[key("syncwatch_otlp_requests_total", signal="traces", code="200")] == 5


def test_order_never_confirmed_is_overdue_and_stays_overdue(ledger):
    it = Integration(ledger)
    t0 = now()
    it.source("order-lost", "orders", t0 - 400)  # changed 400 s ago: past the 5 min deadline already
    it.attempt("order-lost", "orders", "erp", t0 - 399, t0 - 369, error="timeout")
    it.source("order-fresh", "orders", t0)  # within its deadline
    it.close()
    tx = dict(flow="orders", source="storefront", destination="erp")
    ledger.wait_for("syncwatch_transactions_overdue", 1, timeout=3, **tx)
    assert ledger.metric("syncwatch_transactions_pending", **tx) == 2
    assert ledger.metric("syncwatch_attempts_total", flow="orders", destination="erp", status_code="none") == 1
    assert ledger.metric("syncwatch_flow_deadline_seconds", flow="orders") == 300


def test_overdue_within_two_seconds_of_the_deadline(make_sidecar):
    sc = make_sidecar({"flows": {"orders": {"destinations": ["erp"], "deadline": "3s"}}})
    it = Integration(sc)
    t0 = now()
    it.source("order-slow", "orders", t0)
    it.close()
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert sc.metric("syncwatch_transactions_overdue", **tx) == 0
    assert sc.metric("syncwatch_transactions_pending", **tx) == 1
    sc.wait_for("syncwatch_transactions_overdue", 1, timeout=(t0 + 3 + 2) - now(), **tx)


def test_inventory_adjustment_confirmed_twice_is_a_duplicate_apply(ledger):
    it = Integration(ledger, service="wms")
    t0 = now() - 10
    it.source("adj-7", "inventory", t0, source="wms")
    it.attempt("adj-7", "inventory", "storefront", t0 + 0.1, t0 + 0.2, code=200)
    it.confirm("adj-7", "inventory", "storefront", t0 + 0.2, t0 + 0.3, idem="adj-7/sku-42")
    it.confirm("adj-7", "inventory", "storefront", t0 + 2.0, t0 + 2.1, idem="adj-7/sku-42")  # applied again
    # A customers update applied twice is not a duplicate: that flow is eventually consistent.
    it.source("cust-1", "customers", t0, source="storefront")
    it.confirm("cust-1", "customers", "erp", t0 + 1, t0 + 2)
    it.confirm("cust-1", "customers", "erp", t0 + 3, t0 + 4)
    it.close()
    m = ledger.metrics
    assert ledger.metric("syncwatch_duplicate_applies_total", flow="inventory", destination="storefront") == 1
    assert ledger.metric("syncwatch_duplicate_applies_total", None, flow="customers", destination="erp") is None
    assert (
        ledger.metric(
            "syncwatch_transactions_total",
            flow="inventory",
            source="wms",
            destination="storefront",
            outcome="confirmed",
        )
        == 1
    )
    assert ledger.metric(
        "syncwatch_sync_lag_seconds_sum", flow="inventory", source="wms", destination="storefront"
    ) == pytest.approx(0.3, abs=1e-3)
    assert m  # metrics endpoint readable


def test_spans_without_correlation_id_are_counted_uncorrelated(ledger):
    it = Integration(ledger)
    t0 = now()
    for i in range(3):
        it.span(f"http GET /health {i}", t0, t0 + 0.01)
    it.span("attempt without id", t0, t0 + 0.01, syncwatch__stage="attempt", syncwatch__flow="orders")
    it.span("context span", t0, t0 + 0.01, messaging__message__conversation_id="order-9")
    it.close()
    assert ledger.metric("syncwatch_spans_total", result="uncorrelated") == 4
    assert ledger.metric("syncwatch_spans_total", result="correlated") == 1
    assert ledger.metric(
        "syncwatch_transactions_pending", None, flow="orders", source="storefront", destination="erp"
    ) in (None, 0)


def test_confirm_before_source_gives_the_right_lag(ledger):
    erp_side = Integration(ledger, service="erp-adapter")
    storefront = Integration(ledger, service="storefront")
    t0 = now() - 30
    erp_side.confirm("order-2002", "orders", "erp", t0 + 7, t0 + 8)  # arrives first
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert ledger.metric("syncwatch_transactions_pending", None, **tx) in (None, 0)
    storefront.source("order-2002", "orders", t0)
    erp_side.close()
    storefront.close()
    assert ledger.metric("syncwatch_sync_lag_seconds_count", **tx) == 1
    assert ledger.metric("syncwatch_sync_lag_seconds_sum", **tx) == pytest.approx(8.0, abs=1e-3)
    assert ledger.metric("syncwatch_transactions_pending", **tx) == 0
    assert ledger.metric("syncwatch_transactions_overdue", **tx) == 0


def test_negative_lag_from_clock_skew_is_clamped_and_counted(ledger):
    it = Integration(ledger)
    t0 = now()
    it.source("order-skew", "orders", t0)
    it.confirm("order-skew", "orders", "erp", t0 - 3, t0 - 2)  # destination clock runs 2+ s behind
    it.close()
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert ledger.metric("syncwatch_sync_lag_seconds_sum", **tx) == 0
    assert ledger.metric("syncwatch_sync_lag_seconds_count", **tx) == 1
    assert ledger.metric("syncwatch_clock_skew_clamped_total", flow="orders") == 1


def test_failed_transaction_and_fixed_interval_retries_show_zero_jitter(ledger):
    it = Integration(ledger)
    t0 = now() - 100
    for i in range(6):
        corr = f"order-f{i}"
        base = t0 + i * 10
        it.source(corr, "orders", base)
        for n in range(3):  # fixed 1 s backoff: the retry-storm pattern
            it.attempt(corr, "orders", "erp", base + 1 + n * 1.5, base + 1.5 + n * 1.5, code=429, resend=n or None)
        it.fail(corr, "orders", "erp", base + 5)
    it.close()
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert ledger.metric("syncwatch_transactions_total", outcome="failed", **tx) == 6
    assert ledger.metric("syncwatch_transactions_pending", **tx) == 0
    assert ledger.metric("syncwatch_retries_total", flow="orders", destination="erp") == 12
    assert ledger.metric("syncwatch_retry_jitter_ratio", flow="orders", destination="erp") == pytest.approx(0, abs=1e-6)
    assert ledger.metric("syncwatch_delivery_attempts_count", flow="orders", destination="erp") == 6


def test_jittered_retries_show_a_high_jitter_ratio(ledger):
    it = Integration(ledger)
    t0 = now() - 100
    backoffs = [0.5, 2.0, 1.0, 3.5, 0.2, 1.8]
    for i, b in enumerate(backoffs):
        corr = f"order-j{i}"
        base = t0 + i * 10
        it.source(corr, "orders", base)
        it.attempt(corr, "orders", "erp", base + 1, base + 1.5, code=503)
        it.attempt(corr, "orders", "erp", base + 1.5 + b, base + 2 + b, code=200, resend=1)
        it.confirm(corr, "orders", "erp", base + 2 + b, base + 2.5 + b)
    it.close()
    mean = sum(backoffs) / len(backoffs)
    cv = (sum((b - mean) ** 2 for b in backoffs) / len(backoffs)) ** 0.5 / mean
    assert ledger.metric("syncwatch_retry_jitter_ratio", flow="orders", destination="erp") == pytest.approx(
        cv, rel=1e-6
    )


def test_same_span_delivered_twice_counts_once(ledger):
    t0 = now() - 5
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "confirm"
    span.start_time_unix_nano, span.end_time_unix_nano = int(t0 * 1e9), int((t0 + 1) * 1e9)
    for k, v in {
        "syncwatch.stage": "confirm",
        "syncwatch.flow": "orders",
        "syncwatch.destination": "erp",
        "syncwatch.correlation_id": "order-dupdelivery",
        "syncwatch.source.changed_at": str(t0 - 1),
    }.items():
        kv = span.attributes.add()
        kv.key, kv.value.string_value = k, v
    body = req.SerializeToString()
    for _ in range(2):  # an exporter retry after a lost response
        assert not ledger.export(body).HasField("partial_success")
    tx = dict(flow="orders", source="unknown", destination="erp")
    assert ledger.metric("syncwatch_transactions_total", outcome="confirmed", **tx) == 1
    assert ledger.metric("syncwatch_sync_lag_seconds_sum", **tx) == pytest.approx(2.0, abs=1e-3)
    assert ledger.metric("syncwatch_duplicate_applies_total", None, flow="orders", destination="erp") is None


def test_confirm_then_fail_in_one_batch_counts_one_outcome(ledger):
    """A redelivered copy dead-lettered right after the original was applied: still one confirmed transaction."""
    t0 = now() - 20
    common = {
        "syncwatch.flow": "inventory",
        "syncwatch.source": "wms",
        "syncwatch.destination": "storefront",
        "correlation_id": "adj-77",
    }
    req = stage_request(
        [
            {"_start": t0, "syncwatch.stage": "source", **common},
            {
                "_start": t0 + 1,
                "_end": t0 + 1.1,
                "syncwatch.stage": "attempt",
                "http.response.status_code": 200,
                **common,
            },
            {"_start": t0 + 1.1, "_end": t0 + 1.2, "syncwatch.stage": "confirm", **common},
            {
                "_start": t0 + 1.3,
                "_end": t0 + 1.4,
                "syncwatch.stage": "fail",
                "error.type": "retries_exhausted",
                **common,
            },
        ]
    )
    assert not ledger.export(req).HasField("partial_success")
    tx = dict(flow="inventory", source="wms", destination="storefront")
    assert ledger.metric("syncwatch_transactions_total", outcome="confirmed", **tx) == 1
    assert ledger.metric("syncwatch_transactions_total", None, outcome="failed", **tx) is None
    assert ledger.metric("syncwatch_transactions_pending", **tx) == 0


@pytest.mark.parametrize("one_request", [True, False], ids=["one batch", "two batches"])
def test_a_confirm_after_a_fail_replaces_it(ledger, one_request):
    """A dead-lettered order replayed by hand and applied: the ledger keeps one row per transaction,
    now confirmed, with the attempts already recorded."""
    t0 = now() - 60
    common = {
        "syncwatch.flow": "orders",
        "syncwatch.source": "storefront",
        "syncwatch.destination": "erp",
        "correlation_id": "SO-4711",
    }
    first = [
        {"_start": t0, "syncwatch.stage": "source", **common},
        {"_start": t0 + 1, "_end": t0 + 2, "syncwatch.stage": "attempt", "http.response.status_code": 500, **common},
        {"_start": t0 + 3, "_end": t0 + 3, "syncwatch.stage": "fail", "error.type": "retries_exhausted", **common},
    ]
    second = [{"_start": t0 + 30, "_end": t0 + 31, "syncwatch.stage": "confirm", **common}]
    for spans in [first + second] if one_request else [first, second]:
        assert not ledger.export(stage_request(spans)).HasField("partial_success")
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert ledger.metric("syncwatch_transactions_total", outcome="confirmed", **tx) == 1
    assert ledger.metric("syncwatch_sync_lag_seconds_sum", **tx) == pytest.approx(31.0, abs=1e-3)
    assert closed_rows(ledger, "SO-4711") == [("confirmed", 1)]


def test_overdue_transaction_is_expired_after_the_horizon(make_ledger):
    sc = make_ledger(
        {"flows": {"orders": {"destinations": ["erp"], "deadline": "1s"}}, "storage": {"expire_after": "3s"}}
    )
    it = Integration(sc)
    it.source("order-forgotten", "orders", now())
    it.close()
    tx = dict(flow="orders", source="storefront", destination="erp")
    sc.wait_for("syncwatch_transactions_overdue", 1, timeout=4, **tx)
    sc.wait_for("syncwatch_transactions_total", 1, timeout=6, outcome="expired", **tx)
    assert sc.metric("syncwatch_transactions_pending", **tx) == 0
    assert sc.metric("syncwatch_transactions_overdue", **tx) == 0
    assert sc.writer.healthy  # what /readyz answers from
