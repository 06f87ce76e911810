"""OpenTelemetry SDK set-up of the simulated services: each exports its spans and payload
snapshots over OTLP/HTTP to the sidecar, exactly as a real integration would be configured."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# Large queues: at flash-sale volume the default 2048 could drop spans, and a dropped span
# would look to syncwatch like a lost order.
_QUEUE = 100_000


class ServiceTelemetry:
    def __init__(self, service: str, otlp_http_url: str):
        resource = Resource.create({"service.name": service, "deployment.environment": "syncwatch-demo"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{otlp_http_url}/v1/traces", timeout=10),
                max_queue_size=_QUEUE,
                schedule_delay_millis=250,
                max_export_batch_size=512,
            )
        )
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{otlp_http_url}/v1/logs", timeout=10),
                max_queue_size=_QUEUE,
                schedule_delay_millis=250,
                max_export_batch_size=512,
            )
        )

    def flush(self) -> bool:
        spans = self.tracer_provider.force_flush(30_000)
        logs = self.logger_provider.force_flush(30_000)
        return bool(spans) and bool(logs)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
