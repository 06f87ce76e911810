"""OTLP/HTTP receiver: POST /v1/traces and /v1/logs, protobuf or JSON, optionally gzip-encoded."""

from __future__ import annotations

import logging

from aiohttp import web
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from .otlp_decode import JSON, PROTOBUF, OtlpError, decode, decode_traces, encode
from .otlp_service import OtlpService

log = logging.getLogger("syncwatch.otlp.http")

_GRPC_CODE_FOR_HTTP = {400: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}


def _decode_logs(body: bytes, content_type: str):
    return decode(body, content_type, ExportLogsServiceRequest)


def build_app(service: OtlpService, max_body_bytes: int) -> web.Application:
    # client_max_size bounds the body after aiohttp's transparent gzip/deflate decoding, so a
    # compression bomb is cut off at the limit instead of filling memory.
    app = web.Application(client_max_size=max_body_bytes)
    receiver = _Receiver(service, max_body_bytes)
    app.router.add_post("/v1/traces", receiver.traces)
    app.router.add_post("/v1/logs", receiver.logs)
    return app


class _Receiver:
    def __init__(self, service: OtlpService, max_body_bytes: int):
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.requests = service.metrics.otlp_requests

    async def traces(self, request: web.Request) -> web.Response:
        return await self._handle(request, "traces", decode_traces, self.service.export_traces)

    async def logs(self, request: web.Request) -> web.Response:
        return await self._handle(request, "logs", _decode_logs, self.service.export_logs)

    async def _handle(self, request: web.Request, signal: str, decode_body, export) -> web.Response:
        content_type = request.content_type
        reply_type = JSON if content_type == JSON else PROTOBUF
        try:
            if content_type not in (PROTOBUF, JSON):
                raise OtlpError(415, f"unsupported content type {content_type!r}; use {PROTOBUF} or {JSON}",
                                "unsupported_media_type")
            encoding = request.headers.get("Content-Encoding", "identity").lower()
            if encoding not in ("identity", "gzip", "deflate", ""):
                raise OtlpError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none", "unsupported_media_type")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise OtlpError(413, f"request body over the {self.max_body_bytes}-byte limit (decompressed)", "too_large") from None
            except Exception as exc:  # corrupt gzip stream and similar
                raise OtlpError(400, f"cannot read body: {type(exc).__name__}: {exc}", "bad_request") from None
            message = decode_body(body, content_type)
            response = await export(message)
        except OtlpError as err:
            return self._error(signal, err, reply_type)
        self.requests.labels(signal, "200").inc()
        return web.Response(body=encode(response, reply_type), content_type=reply_type)

    def _error(self, signal: str, err: OtlpError, reply_type: str) -> web.Response:
        self.requests.labels(signal, str(err.status)).inc()
        if not err.counted:  # refused before its items were known: one per request
            self.service.metrics.dropped.labels(err.reason).inc()
        headers = {}
        if err.status in (429, 503):
            headers["Retry-After"] = str(self.service.retry_after)
        status = Status(code=_GRPC_CODE_FOR_HTTP.get(err.status, 2), message=err.message)
        return web.Response(status=err.status, body=encode(status, reply_type), content_type=reply_type, headers=headers)
