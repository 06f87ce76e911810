"""Build OTLP requests by hand (opentelemetry-proto) for tests that need exact control of the wire."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def stage_request(spans: list[dict]) -> ExportTraceServiceRequest:
    """spans: dicts with start, end (unix s) and attribute key/values (strings or ints)."""
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for attrs in spans:
        attrs = dict(attrs)
        span = scope.spans.add()
        span.trace_id = attrs.pop("_trace_id", os.urandom(16))
        span.span_id = attrs.pop("_span_id", os.urandom(8))
        span.name = str(attrs.get("syncwatch.stage", "span"))
        start = attrs.pop("_start")
        span.start_time_unix_nano = int(start * 1e9)
        span.end_time_unix_nano = int(attrs.pop("_end", start) * 1e9)
        add_attributes(span, attrs)
    return req


def add_attributes(span, attrs: dict) -> None:
    """Append attributes to a span message: ints as int_value, everything else as strings."""
    for k, v in attrs.items():
        kv = span.attributes.add()
        kv.key = k
        if isinstance(v, int):
            kv.value.int_value = v
        else:
            kv.value.string_value = str(v)


def post(
    url: str,
    body: bytes,
    content_type: str = "application/x-protobuf",
    headers: dict | None = None,
    timeout: float = 10,
) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
