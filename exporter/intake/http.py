"""OTLP/HTTP receiver: POST /v1/traces and /v1/logs, protobuf or JSON, optionally gzip/deflate-encoded.

The body is read and decompressed here, not by aiohttp (its runner is started with
auto_decompress=False), so that decompression is bounded by the body budget and runs off the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import StreamReader, web
from google.rpc.status_pb2 import Status

from syncwatch.intake.body import ENCODINGS, BodyDecoder, Lease, Parse
from syncwatch.intake.decode import JSON, PROTOBUF, OtlpError, encode, parse_logs, parse_traces
from syncwatch.intake.service import OtlpService

log = logging.getLogger("syncwatch.otlp.http")

_GRPC_CODE_FOR_HTTP = {400: 3, 408: 4, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
# An upload that sends nothing for this long is answered 408 and its bytes freed.
BODY_IDLE_TIMEOUT = 30.0
# Keyword arguments for the web.AppRunner serving build_app's application.
RUNNER_OPTIONS = {"auto_decompress": False}


def build_app(service: OtlpService, bodies: BodyDecoder) -> web.Application:
    """The OTLP/HTTP application; serve it with web.AppRunner(app, **RUNNER_OPTIONS)."""
    app = web.Application(client_max_size=bodies.max_body_bytes)
    receiver = _Receiver(service, bodies)
    app.router.add_post("/v1/traces", receiver.traces)
    app.router.add_post("/v1/logs", receiver.logs)
    return app


class _Receiver:
    def __init__(self, service: OtlpService, bodies: BodyDecoder):
        self.service = service
        self.bodies = bodies
        self.max_body_bytes = bodies.max_body_bytes
        self.requests = service.metrics.otlp_requests
        self._accepted = {signal: self.requests.labels(signal, "200") for signal in ("traces", "logs")}

    async def traces(self, request: web.Request) -> web.Response:
        return await self._handle(request, "traces", parse_traces, self.service.export_traces)

    async def logs(self, request: web.Request) -> web.Response:
        return await self._handle(request, "logs", parse_logs, self.service.export_logs)

    async def _handle(
        self, request: web.Request, signal: str, parse: Parse, export: Callable[[Any, int], Awaitable[Any]]
    ) -> web.Response:
        content_type = request.content_type
        reply_type = JSON if content_type == JSON else PROTOBUF
        lease = self.bodies.budget.lease()
        try:
            if content_type not in (PROTOBUF, JSON):
                raise OtlpError(
                    415,
                    f"unsupported content type {content_type!r}; use {PROTOBUF} or {JSON}",
                    "unsupported_media_type",
                )
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ENCODINGS and encoding != "":
                raise OtlpError(
                    415,
                    f"unsupported Content-Encoding {encoding[:40]!r}; use gzip, deflate or none",
                    "unsupported_media_type",
                )
            # The raw body is passed on, not kept here: the decoder drops it once decompressed.
            message, items = await self.bodies.decode(
                await self._read(request, lease), encoding, content_type, parse, lease
            )
            response = await export(message, items)
        except OtlpError as err:
            return self._error(signal, err, reply_type)
        finally:
            lease.release()
        self._accepted[signal].inc()
        return web.Response(body=encode(response, reply_type), content_type=reply_type)

    async def _read(self, request: web.Request, lease: Lease) -> bytearray:
        """The raw body, charged to the lease as it arrives: 413 past max_body_bytes (at once
        when Content-Length says so), 503 when the body budget is spent, 408 when it stalls."""
        length = request.content_length
        if length is not None:
            if length > self.max_body_bytes:
                raise OtlpError(413, f"request body over the {self.max_body_bytes}-byte limit", "too_large")
            if not lease.would_fit(length):
                raise OtlpError(
                    503, "syncwatch is holding as many large request bodies as it allows; retry later", "body_memory"
                )
        body = bytearray()
        content = request.content
        try:
            if content.is_eof():  # all of it arrived with the headers (small exports): no timer needed
                await self._drain(content, body, lease, None)
            else:
                async with asyncio.timeout(BODY_IDLE_TIMEOUT) as idle:
                    await self._drain(content, body, lease, idle)
        except OtlpError:
            raise
        except TimeoutError:
            raise OtlpError(
                408, f"request body stalled: nothing received for {BODY_IDLE_TIMEOUT:.0f}s", "bad_request"
            ) from None
        except Exception as exc:  # the client went away, or a malformed chunked encoding
            raise OtlpError(400, f"cannot read body: {type(exc).__name__}: {exc}", "bad_request") from None
        if length is not None and len(body) != length:
            raise OtlpError(400, "cannot read body: shorter than its Content-Length", "bad_request")
        return body

    async def _drain(self, content: StreamReader, body: bytearray, lease: Lease, idle: asyncio.Timeout | None) -> None:
        while chunk := await content.readany():
            if len(body) + len(chunk) > self.max_body_bytes:
                raise OtlpError(413, f"request body over the {self.max_body_bytes}-byte limit", "too_large")
            lease.take(len(chunk))
            body += chunk
            if idle is not None:
                idle.reschedule(asyncio.get_running_loop().time() + BODY_IDLE_TIMEOUT)

    def _error(self, signal: str, err: OtlpError, reply_type: str) -> web.Response:
        self.requests.labels(signal, str(err.status)).inc()
        if not err.counted:  # refused before its items were known: one per request
            self.service.metrics.dropped.labels(err.reason).inc()
        headers = {}
        if err.status in (429, 503):
            headers["Retry-After"] = str(self.service.retry_after)
        status = Status(code=_GRPC_CODE_FOR_HTTP.get(err.status, 2), message=err.message)
        return web.Response(
            status=err.status, body=encode(status, reply_type), content_type=reply_type, headers=headers
        )
