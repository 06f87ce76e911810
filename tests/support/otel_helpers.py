"""Export spans through the real OpenTelemetry SDK and its OTLP exporters, as an integration does
(or, given a ledger_harness.LedgerHarness, through the SDK's OTLP encoder into it, in-process)."""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

NS = 1_000_000_000


class Integration:
    """A tracer exporting synchronously (SimpleSpanProcessor), so a span is acknowledged when end() returns."""

    def __init__(self, sidecar, transport: str = "http", service: str = "middleware"):
        """`sidecar`: a running Sidecar (spans go over OTLP/HTTP or gRPC), or a LedgerHarness (in-process)."""
        if hasattr(sidecar, "span_exporter"):
            exporter = sidecar.span_exporter()
        elif transport == "grpc":
            exporter = GrpcSpanExporter(endpoint=sidecar.otlp_grpc, insecure=True)
        else:
            exporter = HttpSpanExporter(endpoint=sidecar.otlp_http + "/v1/traces")
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("syncwatch-tests")

    def span(self, name: str, start: float, end: float | None = None, **attributes) -> None:
        attrs = {k.replace("__", "."): v for k, v in attributes.items() if v is not None}
        span = self.tracer.start_span(name, start_time=int(start * NS), attributes=attrs)
        span.end(end_time=int((end if end is not None else start) * NS))

    def source(self, corr, flow, start, source="storefront", **extra):
        self.span(
            "source",
            start,
            start,
            syncwatch__stage="source",
            syncwatch__flow=flow,
            syncwatch__source=source,
            syncwatch__correlation_id=corr,
            **extra,
        )

    def attempt(self, corr, flow, dest, start, end, code=None, resend=None, error=None, **extra):
        self.span(
            "attempt",
            start,
            end,
            syncwatch__stage="attempt",
            syncwatch__flow=flow,
            syncwatch__destination=dest,
            syncwatch__correlation_id=corr,
            http__response__status_code=code,
            http__request__resend_count=resend,
            error__type=error,
            **extra,
        )

    def confirm(self, corr, flow, dest, start, end, idem=None, **extra):
        self.span(
            "confirm",
            start,
            end,
            syncwatch__stage="confirm",
            syncwatch__flow=flow,
            syncwatch__destination=dest,
            syncwatch__correlation_id=corr,
            syncwatch__idempotency_key=idem,
            **extra,
        )

    def fail(self, corr, flow, dest, start, **extra):
        self.span(
            "fail",
            start,
            start,
            syncwatch__stage="fail",
            syncwatch__flow=flow,
            syncwatch__destination=dest,
            syncwatch__correlation_id=corr,
            error__type="retries_exhausted",
            **extra,
        )

    def close(self):
        self.provider.shutdown()


def now() -> float:
    return time.time()
