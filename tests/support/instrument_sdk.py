"""syncwatch-instrument (instrumentation/) set up as an integration sets it up: the OpenTelemetry SDK
exporting spans and logs synchronously over OTLP/HTTP to a sidecar, for the instrument and audit tests."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from syncwatch_instrument import SyncInstrument


class Exported:
    """An integration's SDK set-up: spans and logs exported synchronously over OTLP/HTTP."""

    def __init__(self, sidecar):
        resource = Resource.create({"service.name": "middleware"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=sidecar.otlp_http + "/v1/traces"))
        )
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=sidecar.otlp_http + "/v1/logs"))
        )

    def instrument(self, **defaults) -> SyncInstrument:
        return SyncInstrument(tracer_provider=self.tracer_provider, logger_provider=self.logger_provider, **defaults)

    def close(self):
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
