"""The sidecar's intake and ledger in-process, for scenario tests that assert the ledger's behaviour
rather than the transport: a request takes the real path from decode to the ledger and the metrics
(decode_traces, OtlpService, LedgerWriter's recording, SpanExtractor, Ledger) without sockets or a
subprocess. A fake clock, moved only by the test, and a fresh CollectorRegistry give exact values.

What it leaves out, and the tests that keep it: the HTTP/gRPC receivers and their request counters
(syncwatch_otlp_requests_total), the writer thread's group commit and tick cadence, restarts. Those
run through the real sidecar (sidecar.Sidecar, the `sidecar`/`make_sidecar` fixtures)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from syncwatch.config.models import Config
from syncwatch.intake.decode import PROTOBUF, OtlpError, decode_traces
from syncwatch.intake.extract import SpanExtractor
from syncwatch.intake.service import OtlpService
from syncwatch.intake.writer import TICK_SECONDS, LedgerWriter
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics


class FakeClock:
    """Unix seconds that move only when the test says so."""

    def __init__(self, t: float | None = None):
        self.t = time.time() if t is None else float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class InProcessWriter(LedgerWriter):
    """The ledger writer without its thread: each request is extracted and recorded (one group commit
    of one request) on the caller's thread before submit returns, so a test needs no waiting."""

    def submit(self, request: Any, n_spans: int) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._record([(request, n_spans, future, loop)])
        return future


class LedgerHarness:
    """One sidecar's intake and ledger; `export()` is an OTLP/HTTP protobuf export without the socket."""

    def __init__(self, config: Config, clock: FakeClock):
        self.config = config
        self.clock = clock
        self.registry = CollectorRegistry()
        self.metrics_ = Metrics(self.registry)
        self.ledger = Ledger(config, self.metrics_, clock)
        self.ledger.load()
        self.ledger.tick(clock())  # as App.start does
        self.writer = InProcessWriter(
            self.ledger,
            SpanExtractor(config.correlation.keys, config.limits.max_correlation_id_length),
            self.metrics_,
            config.intake.max_queued_spans,
            config.intake.max_batch_spans,
            clock,
        )
        self.service = OtlpService(self.writer, self.metrics_, retry_after=config.intake.retry_after, clock=clock)
        self._loop = asyncio.new_event_loop()

    @property
    def ledger_path(self) -> Path:
        return Path(self.config.storage.ledger_path)

    # ---- intake --------------------------------------------------------------------------------
    def export(self, request: ExportTraceServiceRequest | bytes) -> ExportTraceServiceResponse:
        """Decode and record a trace export; raises intake.decode.OtlpError where the sidecar answers an error."""
        body = request if isinstance(request, bytes) else request.SerializeToString()
        view = decode_traces(body, PROTOBUF)
        return self._loop.run_until_complete(self.service.export_traces(view))

    def span_exporter(self) -> SpanExporter:
        """An OpenTelemetry SDK span exporter that exports into this harness (see otel_helpers.Integration)."""
        return _HarnessSpanExporter(self)

    # ---- time ----------------------------------------------------------------------------------
    def tick(self) -> None:
        """What the writer thread does every TICK_SECONDS: mark overdue, expire, sweep."""
        self.ledger.tick(self.clock())

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, ticking as often as the writer thread does."""
        end = self.clock() + seconds
        while self.clock() < end:
            self.clock.t = min(end, self.clock() + TICK_SECONDS)
            self.tick()

    # ---- reading metrics -----------------------------------------------------------------------
    def metric(self, name: str, default: float | None = 0.0, **labels: str) -> float | None:
        value = self.registry.get_sample_value(name, labels)
        return default if value is None else value

    def metrics(self) -> dict[tuple, float]:
        """All samples as {(name, frozenset(labels.items())): value}, like Sidecar.metrics()."""
        return {
            (s.name, frozenset(s.labels.items())): s.value for family in self.registry.collect() for s in family.samples
        }

    def wait_for(self, name: str, value: float, timeout: float = 10, **labels: str) -> float:
        """Advance the fake clock tick by tick until the metric has `value`, for at most `timeout` seconds."""
        end = self.clock() + timeout
        while True:
            got = self.metric(name, **labels)
            if got == value:
                return got
            if self.clock() >= end:
                raise AssertionError(f"{name}{labels} = {got}, expected {value} within {timeout}s (fake clock)")
            self.clock.t = min(end, self.clock() + TICK_SECONDS)
            self.tick()

    def close(self) -> None:
        self._loop.close()
        self.ledger.close()


class _HarnessSpanExporter(SpanExporter):
    """Encodes with the SDK's own OTLP encoder (as the OTLP exporters do), then exports in-process."""

    def __init__(self, harness: LedgerHarness):
        self.harness = harness

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.harness.export(encode_spans(spans).SerializeToString())
        except OtlpError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass
