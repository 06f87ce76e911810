"""What the syncwatch-instrument helper costs an integration per call, with the real SDK
(BatchSpanProcessor/BatchLogRecordProcessor; the exporters discard, so only the helper and SDK
are measured) and without an SDK (API no-op). Prints microseconds per call.

    .venv/bin/python bench/instrument.py [N]
"""

from __future__ import annotations

import sys
import time

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from syncwatch_instrument import SyncInstrument


class Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


class DiscardLogs(LogRecordExporter):
    def export(self, batch):
        return LogRecordExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def run(sw: SyncInstrument, n: int) -> dict[str, float]:
    body = {"id": "SO-1", "lines": [{"sku": "CAP", "qty": 2}], "total": 42.5}
    out = {}
    t = time.perf_counter()
    for i in range(n):
        sw.source_changed(f"SO-{i}")
    out["source_changed"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        with sw.attempt(f"SO-{i}", resend_count=1) as a:
            a.response(200)
    out["attempt"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        sw.confirm(f"SO-{i}", idempotency_key=f"SO-{i}")
    out["confirm"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        sw.snapshot(f"SO-{i}", body, "request")
    out["snapshot"] = time.perf_counter() - t
    return {k: v / n * 1e6 for k, v in out.items()}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=4 * n))
    lp = LoggerProvider()
    lp.add_log_record_processor(BatchLogRecordProcessor(DiscardLogs(), max_queue_size=4 * n))
    with_sdk = run(
        SyncInstrument(flow="orders", source="storefront", destination="erp", tracer_provider=tp, logger_provider=lp), n
    )
    tp.shutdown()
    lp.shutdown()
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.trace import NoOpTracerProvider

    no_sdk = run(
        SyncInstrument(flow="orders", tracer_provider=NoOpTracerProvider(), logger_provider=NoOpLoggerProvider()), n
    )
    print(f"syncwatch-instrument, {n} calls each (us per call)")
    print(f"{'call':16s} {'with SDK':>9s} {'no SDK':>9s}")
    for name in with_sdk:
        print(f"{name:16s} {with_sdk[name]:9.1f} {no_sdk[name]:9.1f}")


if __name__ == "__main__":
    main()
