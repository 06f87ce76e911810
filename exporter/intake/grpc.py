"""OTLP/gRPC receiver: TraceService/Export and LogsService/Export on one grpc.aio server.

The handlers take raw bytes and parse them here, so a malformed message is answered with
INVALID_ARGUMENT (and counted) instead of the generic error grpc gives for a failed deserializer.
They are registered as client-streaming handlers (the wire format of a unary call is the same):
a message over the size limit is refused by gRPC's core before any handler sees it, and only a
streaming handler learns of the call at all, so that it can count the refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from syncwatch.intake.body import FREE_PER_REQUEST, BodyDecoder, Parse
from syncwatch.intake.decode import PROTOBUF, OtlpError, parse_logs, parse_traces
from syncwatch.intake.service import OtlpService

# HTTP-equivalent status of each gRPC answer, so syncwatch_otlp_requests_total{code} reads the same for both transports.
_GRPC_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def build_server(service: OtlpService, address: str, bodies: BodyDecoder) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", bodies.max_body_bytes),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ]
    )
    handlers = {
        "opentelemetry.proto.collector.trace.v1.TraceService": {
            # Trace bodies parse into the intake's view of the message (see trace_view.py).
            "Export": _handler(service, bodies, "traces", parse_traces, service.export_traces),
        },
        "opentelemetry.proto.collector.logs.v1.LogsService": {
            "Export": _handler(service, bodies, "logs", parse_logs, service.export_logs),
        },
    }
    for name, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, methods),))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    return server, port


def _handler(
    service: OtlpService, bodies: BodyDecoder, signal: str, parse: Parse, export: Callable[[Any, int], Awaitable[Any]]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[bytes]]:
    requests = service.metrics.otlp_requests
    accepted = requests.labels(signal, "200")

    def count(err: OtlpError) -> None:
        requests.labels(signal, str(err.status)).inc()
        if not err.counted:  # refused before its items were known: one per request
            service.metrics.dropped.labels(err.reason).inc()

    async def handle(request_iterator: Any, context: grpc.aio.ServicerContext) -> bytes:
        raw = await context.read()
        if raw is grpc.aio.EOF:
            # No message: either gRPC's core refused it as too large (and has already answered
            # RESOURCE_EXHAUSTED, so answering fails), or the client sent none.
            try:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
            except grpc.aio.AbortError:
                count(OtlpError(400, "", "bad_request"))
                raise
            except Exception:
                count(OtlpError(413, "", "too_large"))
                raise
        lease = None
        try:
            if len(raw) <= FREE_PER_REQUEST:  # an ordinary export: nothing to charge, parsed here
                message, items = parse(raw, PROTOBUF)
            else:
                lease = bodies.budget.lease()
                lease.take(len(raw))
                message, items = await bodies.decode(raw, "identity", PROTOBUF, parse, lease)
            del raw
            response = await export(message, items)
        except OtlpError as err:
            count(err)
            if err.status == 503:
                # Tells the OTLP exporter how long to back off (google.rpc.RetryInfo is optional).
                context.set_trailing_metadata((("retry-after", str(service.retry_after)),))
            await context.abort(_GRPC_FOR_HTTP.get(err.status, grpc.StatusCode.INTERNAL), err.message)
        finally:
            if lease is not None:
                lease.release()
        accepted.inc()
        return response.SerializeToString()

    return grpc.stream_unary_rpc_method_handler(handle, request_deserializer=None, response_serializer=None)
