"""syncwatch-instrument: the one-call helpers, exported through the real OpenTelemetry SDK to a
real sidecar, checked by what the sidecar counts; plus the exact attributes and the packaging
promise (only opentelemetry-api, no shadowed module names)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from instrument_sdk import Exported
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from syncwatch_instrument import SyncInstrument

ROOT = Path(__file__).resolve().parent.parent
TX = {"flow": "orders", "source": "storefront", "destination": "erp"}


@pytest.fixture
def exported(make_sidecar):
    sidecar = make_sidecar(
        {
            "flows": {
                "orders": {"destinations": ["erp"], "deadline": "1s"},
                "inventory": {"destinations": ["erp"], "deadline": "60s"},
            }
        }
    )
    exp = Exported(sidecar)
    yield sidecar, exp
    exp.close()


def test_confirmed_order_with_a_retry_gives_lag_attempts_retries_and_snapshots(exported):
    sidecar, exp = exported
    sw = exp.instrument(flow="orders", source="storefront", destination="erp")
    changed = time.time() - 2.0
    sw.source_changed("SO-1", changed_at=changed)
    with sw.attempt("SO-1", resend_count=0) as a:
        a.snapshot_request({"id": "SO-1", "total": 42.5})
        a.response(429)
        a.snapshot_response('{"error":"rate limit"}')
    with sw.attempt("SO-1", resend_count=1) as a:
        a.response(200)
    sw.confirm("SO-1", idempotency_key="SO-1")

    sidecar.wait_for("syncwatch_transactions_total", 1, outcome="confirmed", **TX)
    m = sidecar.metrics()
    assert (
        m[
            (
                "syncwatch_attempts_total",
                frozenset({"flow": "orders", "destination": "erp", "status_code": "429"}.items()),
            )
        ]
        == 1
    )
    assert (
        m[
            (
                "syncwatch_attempts_total",
                frozenset({"flow": "orders", "destination": "erp", "status_code": "200"}.items()),
            )
        ]
        == 1
    )
    assert sidecar.metric("syncwatch_retries_total", flow="orders", destination="erp") == 1
    assert sidecar.metric("syncwatch_sync_lag_seconds_count", **TX) == 1
    lag = sidecar.metric("syncwatch_sync_lag_seconds_sum", **TX)
    assert 2.0 <= lag < 10.0, lag  # measured from changed_at, not from the span start
    assert sidecar.metric("syncwatch_transactions_pending", **TX) == 0
    assert sidecar.metric("syncwatch_spans_total", result="correlated") == 4
    assert sidecar.metric("syncwatch_spans_total", result="rejected") == 0
    sidecar.wait_for("syncwatch_snapshots_total", 1, direction="request", result="stored")
    sidecar.wait_for("syncwatch_snapshots_total", 1, direction="response", result="stored")

    # The same operation confirmed again is a duplicate apply.
    sw.confirm("SO-1", idempotency_key="SO-1")
    sidecar.wait_for("syncwatch_duplicate_applies_total", 1, flow="orders", destination="erp")
    assert sidecar.metric("syncwatch_transactions_total", outcome="confirmed", **TX) == 1


def test_failure_timeout_and_silent_loss(exported):
    sidecar, exp = exported
    sw = exp.instrument(source="storefront", destination="erp")
    # Gave up: the timeout and the exception escaping the block are attempts without a code.
    sw.source_changed("SO-2", flow="orders")
    with sw.attempt("SO-2", flow="orders") as a:
        a.error("timeout")
    with pytest.raises(ConnectionResetError):
        with sw.attempt("SO-2", flow="orders", resend_count=1):
            raise ConnectionResetError("peer reset")
    sw.fail("SO-2", flow="orders", error_type="retries_exhausted")
    # Sent and never confirmed: overdue after the 1 s deadline.
    sw.source_changed("SO-3", flow="orders")

    sidecar.wait_for("syncwatch_transactions_total", 1, outcome="failed", **TX)
    assert sidecar.metric("syncwatch_attempts_total", flow="orders", destination="erp", status_code="none") == 2
    assert sidecar.metric("syncwatch_retries_total", flow="orders", destination="erp") == 1
    sidecar.wait_for("syncwatch_transactions_overdue", 1, timeout=10, **TX)
    assert sidecar.metric("syncwatch_transactions_pending", **TX) == 1


def test_attributes_are_the_specs_and_snapshots_point_at_their_attempt():
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    sw = SyncInstrument(
        flow="inventory", source="wms", destination="storefront", tracer_provider=tp, logger_provider=lp
    )

    sw.source_changed("ADJ-9", changed_at="2026-11-27T10:00:00Z")
    with sw.attempt("ADJ-9", resend_count=2) as a:
        a.snapshot_request({"sku": "CAP", "delta": -1})
        a.response_code("E42", ok=False)
    sw.confirm("ADJ-9", idempotency_key="adj:9")
    sw.fail("ADJ-9", error_type="dead_lettered")

    src, att, conf, fail = spans.get_finished_spans()
    common = {
        "syncwatch.correlation_id": "ADJ-9",
        "syncwatch.flow": "inventory",
        "syncwatch.source": "wms",
        "syncwatch.destination": "storefront",
    }
    assert dict(src.attributes) == {
        **common,
        "syncwatch.stage": "source",
        "syncwatch.source.changed_at": "2026-11-27T10:00:00Z",
    }
    assert dict(att.attributes) == {
        **common,
        "syncwatch.stage": "attempt",
        "http.request.resend_count": 2,
        "syncwatch.response_code": "E42",
    }
    assert dict(conf.attributes) == {**common, "syncwatch.stage": "confirm", "syncwatch.idempotency_key": "adj:9"}
    assert dict(fail.attributes) == {**common, "syncwatch.stage": "fail", "error.type": "dead_lettered"}

    (snap,) = logs.get_finished_logs()
    record = snap.log_record
    assert json.loads(record.body) == {"sku": "CAP", "delta": -1}
    # Source and destination name the writer of each field for the payload audits.
    assert dict(record.attributes) == {**common, "syncwatch.payload.direction": "request"}
    assert (record.trace_id, record.span_id) == (att.context.trace_id, att.context.span_id)

    with pytest.raises(ValueError, match="direction"):
        sw.snapshot("ADJ-9", "x", "sideways")
    with pytest.raises(ValueError, match="flow"):
        SyncInstrument(tracer_provider=tp).confirm("X-1")


def test_distribution_depends_only_on_the_api_and_shadows_nothing():
    meta = tomllib.loads((ROOT / "instrumentation" / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "syncwatch-instrument"
    assert [d.split(">")[0].split("=")[0] for d in meta["project"]["dependencies"]] == ["opentelemetry-api"]
    assert meta["tool"]["setuptools"]["packages"] == ["syncwatch_instrument"]
    src = ROOT / "instrumentation" / "src"
    assert sorted(p.name for p in src.iterdir() if not p.name.endswith(".egg-info")) == ["syncwatch_instrument"]
    # Importing it loads no SDK, exporter, web framework or sidecar code.
    probe = (
        "import sys, syncwatch_instrument; "
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in "
        "('exporter', 'collectors', 'aiohttp', 'grpc', 'google', 'prometheus_client', 'boto3', 'requests') "
        "or m.startswith('opentelemetry.sdk') or m.startswith('opentelemetry.exporter')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == ""


def test_built_wheel_holds_only_the_helper_and_requires_only_the_api(tmp_path):
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT / "instrumentation"), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("syncwatch_instrument-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("syncwatch_instrument-")} == {"syncwatch_instrument"}
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert [line for line in meta.splitlines() if line.startswith("Requires-Dist")] == [
        "Requires-Dist: opentelemetry-api>=1.35"
    ]


def test_module_level_calls_use_the_global_providers_set_after_import():
    # The default instance is created at import time; an SDK configured later must still be used.
    probe = """
import syncwatch_instrument as sw
from opentelemetry import trace, _logs
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
tp = TracerProvider(); tp.add_span_processor(SimpleSpanProcessor(spans)); trace.set_tracer_provider(tp)
lp = LoggerProvider(); lp.add_log_record_processor(SimpleLogRecordProcessor(logs)); _logs.set_logger_provider(lp)
with sw.attempt("CU-1", flow="customers", destination="erp"):
    sw.snapshot("CU-1", "hello", "request", flow="customers")
sw.confirm("CU-1", flow="customers", destination="erp")
(a, c) = spans.get_finished_spans()
(log,) = logs.get_finished_logs()
assert a.attributes["syncwatch.stage"] == "attempt" and c.attributes["syncwatch.stage"] == "confirm"
assert log.log_record.span_id == a.context.span_id and log.log_record.body == "hello"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "ok", out.stderr
