"""Decoding OTLP request bodies (protobuf and JSON) into opentelemetry-proto messages."""

from __future__ import annotations

import base64
import json

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .trace_view import TraceView, view_of

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class OtlpError(Exception):
    """A request syncwatch refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, reason: str, counted: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # label of syncwatch_dropped_total
        self.counted = counted  # its items are already in syncwatch_dropped_total


# OTLP/JSON writes trace and span IDs as hex, where protobuf's JSON mapping expects base64.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_CONTAINERS = ("resourceSpans", "resource_spans", "scopeSpans", "scope_spans", "spans", "links",
               "resourceLogs", "resource_logs", "scopeLogs", "scope_logs", "logRecords", "log_records")


def _hex_ids_to_base64(node) -> None:
    if isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
        return
    if not isinstance(node, dict):
        return
    for key in _ID_FIELDS:
        value = node.get(key)
        if isinstance(value, str) and value:
            try:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise OtlpError(400, f"{key} must be hex-encoded, got {value[:40]!r}", "bad_request") from None
    for key in _CONTAINERS:
        child = node.get(key)
        if child is not None:
            _hex_ids_to_base64(child)


def decode(body: bytes, content_type: str, message_cls):
    """Parse an OTLP/HTTP body. Raises OtlpError(400) for bad data, OtlpError(415) for other types."""
    if content_type == PROTOBUF:
        try:
            return message_cls.FromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise OtlpError(400, f"body is not a valid {message_cls.DESCRIPTOR.name} protobuf: {exc}", "bad_request") from None
    if content_type == JSON:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OtlpError(400, f"body is not valid JSON: {exc}", "bad_request") from None
        if not isinstance(data, dict):
            raise OtlpError(400, "OTLP/JSON body must be a JSON object", "bad_request")
        _hex_ids_to_base64(data)
        try:
            return json_format.ParseDict(data, message_cls(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise OtlpError(400, f"body is not a valid OTLP/JSON {message_cls.DESCRIPTOR.name}: {exc}", "bad_request") from None
    raise OtlpError(415, f"unsupported content type {content_type!r}; use {PROTOBUF} or {JSON}", "unsupported_media_type")


def decode_traces(body: bytes, content_type: str):
    """Parse an OTLP/HTTP trace export into the intake's TraceView (see trace_view.py).

    Protobuf bodies parse straight into the view. OTLP/JSON goes through the full message (the
    JSON mapping of the view's attribute maps differs from OTLP's lists) and is re-encoded."""
    if content_type == PROTOBUF:
        return decode(body, content_type, TraceView)
    return view_of(decode(body, content_type, ExportTraceServiceRequest))


def encode(message, content_type: str) -> bytes:
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()
