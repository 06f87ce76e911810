"""OTLP/gRPC receiver: TraceService/Export and LogsService/Export on one grpc.aio server.

The handlers take raw bytes and parse them here, so a malformed message is answered with
INVALID_ARGUMENT (and counted) instead of the generic error grpc gives for a failed deserializer.
"""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from .otlp_decode import PROTOBUF, OtlpError, decode
from .otlp_service import OtlpService
from .trace_view import TraceView

# HTTP-equivalent status of each gRPC answer, so syncwatch_otlp_requests_total{code} reads the same for both transports.
_GRPC_FOR_HTTP = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                  415: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE}


def build_server(service: OtlpService, address: str, max_body_bytes: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_body_bytes),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ])
    handlers = {
        "opentelemetry.proto.collector.trace.v1.TraceService": {
            # Trace bodies parse into the intake's view of the message (see trace_view.py).
            "Export": _handler(service, "traces", TraceView, service.export_traces),
        },
        "opentelemetry.proto.collector.logs.v1.LogsService": {
            "Export": _handler(service, "logs", ExportLogsServiceRequest, service.export_logs),
        },
    }
    for name, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, methods),))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    return server, port


def _handler(service: OtlpService, signal: str, message_cls, export):
    requests = service.metrics.otlp_requests

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            message = decode(raw, PROTOBUF, message_cls)
            response = await export(message)
        except OtlpError as err:
            requests.labels(signal, str(err.status)).inc()
            if not err.counted:  # refused before its items were known: one per request
                service.metrics.dropped.labels(err.reason).inc()
            if err.status == 503:
                # Tells the OTLP exporter how long to back off (google.rpc.RetryInfo is optional).
                context.set_trailing_metadata((("retry-after", str(service.retry_after)),))
            await context.abort(_GRPC_FOR_HTTP.get(err.status, grpc.StatusCode.INTERNAL), err.message)
        requests.labels(signal, "200").inc()
        return response.SerializeToString()

    return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None, response_serializer=None)
