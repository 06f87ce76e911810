"""Decoding OTLP request bodies (protobuf and JSON) into opentelemetry-proto messages."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from syncwatch.config.errors import SyncwatchError
from syncwatch.intake.trace_view import TraceView, view_of

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# Why an OTLP request (or its items) was refused: the reason label of syncwatch_dropped_total.
RefusalReason = Literal[
    "backpressure",
    "body_memory",
    "ledger_unavailable",
    "ledger_error",
    "too_large",
    "bad_request",
    "unsupported_media_type",
    "internal_error",
]


class OtlpError(SyncwatchError):
    """A request syncwatch refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, reason: RefusalReason, counted: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # label of syncwatch_dropped_total
        self.counted = counted  # its items are already in syncwatch_dropped_total


# OTLP/JSON writes trace and span IDs as hex, where protobuf's JSON mapping expects base64.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
# The container arrays of an export, outermost first: resources, scopes, then spans or log records.
_LEVELS = (
    frozenset(("resourceSpans", "resource_spans", "resourceLogs", "resource_logs")),
    frozenset(("scopeSpans", "scope_spans", "scopeLogs", "scope_logs")),
    frozenset(("spans", "logRecords", "log_records")),
)
_LINKS = ("links",)


def _fix_ids(item: object) -> None:
    if not isinstance(item, dict):
        return
    for key in _ID_FIELDS:
        value = item.get(key)
        if isinstance(value, str) and value:
            try:
                item[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise OtlpError(400, f"{key} must be hex-encoded, got {value[:40]!r}", "bad_request") from None


def _items(node: object, keys: frozenset[str] | tuple[str, ...]) -> Iterator[Any]:
    if isinstance(node, dict):
        for key in keys:
            child = node.get(key)
            if isinstance(child, list):
                yield from child


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """Along the export's own structure only (resource > scope > span/log record > link), so
    the work is linear and nothing recurses on what a client nests."""
    for resource in _items(data, _LEVELS[0]):
        for scope in _items(resource, _LEVELS[1]):
            for item in _items(scope, _LEVELS[2]):
                _fix_ids(item)
                for link in _items(item, _LINKS):
                    _fix_ids(link)


# Whitespace (it always matches, possibly empty: typed so, as the C call stays inline).
_ws = cast(Callable[[str, int], "re.Match[str]"], re.compile(r"[ \t\n\r]*").match)
# The C scanner: one JSON value from an index; and the string scanner.
_scan = cast(Callable[[str, int], tuple[Any, int]], getattr(json.JSONDecoder(), "scan_once"))  # noqa: B009 -- untyped attribute
_scanstring = cast(Callable[[str, int], tuple[str, int]], getattr(json.decoder, "scanstring"))  # noqa: B009 -- untyped attribute


def loads(body: bytes | bytearray | str) -> object:
    """json.loads, except that each element of the export's container arrays is parsed by a
    separate call of the C scanner, so a pool thread parsing a large body hands the GIL (and the
    event loop) a turn between spans instead of holding it for the whole document."""
    text = body if isinstance(body, str) else bytes(body).decode(json.detect_encoding(body), "surrogatepass")
    idx = _ws(text, 0).end()
    if text.startswith("{", idx):
        value, idx = _object(text, idx, 0)
    else:
        value, idx = _value(text, idx)
    idx = _ws(text, idx).end()
    if idx != len(text):
        raise json.JSONDecodeError("Extra data", text, idx)
    return value


def _value(text: str, idx: int) -> tuple[Any, int]:
    try:
        return _scan(text, idx)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None


def _object(text: str, idx: int, level: int) -> tuple[dict[str, Any], int]:
    obj: dict[str, Any] = {}
    keys = _LEVELS[level]
    idx = _ws(text, idx + 1).end()
    if text.startswith("}", idx):
        return obj, idx + 1
    while True:
        if not text.startswith('"', idx):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, idx)
        key, idx = _scanstring(text, idx + 1)
        idx = _ws(text, idx).end()
        if not text.startswith(":", idx):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, idx)
        idx = _ws(text, idx + 1).end()
        if key in keys and text.startswith("[", idx):
            value, idx = _array(text, idx, level + 1)
        else:
            value, idx = _value(text, idx)
        obj[key] = value
        idx = _ws(text, idx).end()
        if text.startswith("}", idx):
            return obj, idx + 1
        if not text.startswith(",", idx):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
        idx = _ws(text, idx + 1).end()


def _array(text: str, idx: int, level: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    idx = _ws(text, idx + 1).end()
    if text.startswith("]", idx):
        return items, idx + 1
    while True:
        if level < len(_LEVELS) and text.startswith("{", idx):
            value, idx = _object(text, idx, level)
        else:
            value, idx = _value(text, idx)
        items.append(value)
        idx = _ws(text, idx).end()
        if text.startswith("]", idx):
            return items, idx + 1
        if not text.startswith(",", idx):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
        idx = _ws(text, idx + 1).end()


def decode(body: bytes | bytearray, content_type: str, message_cls: Any) -> Any:
    """Parse an OTLP/HTTP body (bytes or bytearray). Raises OtlpError(400) for bad data,
    OtlpError(415) for other types."""
    if content_type == PROTOBUF:
        try:
            return message_cls.FromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise OtlpError(
                400, f"body is not a valid {message_cls.DESCRIPTOR.name} protobuf: {exc}", "bad_request"
            ) from None
    if content_type == JSON:
        try:
            data = loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OtlpError(400, f"body is not valid JSON: {exc}", "bad_request") from None
        except RecursionError:
            raise OtlpError(400, "body is not valid OTLP/JSON: nested too deeply", "bad_request") from None
        if not isinstance(data, dict):
            raise OtlpError(400, "OTLP/JSON body must be a JSON object", "bad_request")
        _hex_ids_to_base64(data)
        try:
            return json_format.ParseDict(data, message_cls(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise OtlpError(
                400, f"body is not a valid OTLP/JSON {message_cls.DESCRIPTOR.name}: {exc}", "bad_request"
            ) from None
        except RecursionError:
            raise OtlpError(
                400, f"body is not a valid OTLP/JSON {message_cls.DESCRIPTOR.name}: nested too deeply", "bad_request"
            ) from None
    raise OtlpError(
        415, f"unsupported content type {content_type!r}; use {PROTOBUF} or {JSON}", "unsupported_media_type"
    )


def decode_traces(body: bytes | bytearray, content_type: str) -> Any:
    """Parse an OTLP/HTTP trace export into the intake's TraceView (see trace_view.py).

    Protobuf bodies parse straight into the view. OTLP/JSON goes through the full message (the
    JSON mapping of the view's attribute maps differs from OTLP's lists) and is re-encoded."""
    if content_type == PROTOBUF:
        return decode(body, content_type, TraceView)
    return view_of(decode(body, content_type, ExportTraceServiceRequest))


def decode_logs(body: bytes | bytearray, content_type: str) -> ExportLogsServiceRequest:
    return decode(body, content_type, ExportLogsServiceRequest)


# Containers (resource and scope entries) a request may have beyond two per item: each one is
# a Python object to walk, and only two bytes on the wire.
MAX_EXTRA_CONTAINERS = 10_000
_SHAPES = {"traces": ("resource_spans", "scope_spans", "spans"), "logs": ("resource_logs", "scope_logs", "log_records")}


def count_items(message: Any, signal: str) -> int:
    """Spans (or log records) of a parsed export. Raises OtlpError(400) for a message of mostly
    empty resource or scope entries, after walking at most MAX_EXTRA_CONTAINERS more than its items."""
    resources_field, scopes_field, items_field = _SHAPES[signal]
    seen = items = 0
    for resource in getattr(message, resources_field):
        seen += 1
        for scope in getattr(resource, scopes_field):
            seen += 1
            items += len(getattr(scope, items_field))
            if seen > 2 * items + MAX_EXTRA_CONTAINERS:
                break
        if seen > 2 * items + MAX_EXTRA_CONTAINERS:
            raise OtlpError(
                400,
                f"more than {MAX_EXTRA_CONTAINERS} {resources_field}/{scopes_field} entries beyond "
                f"two per {'span' if signal == 'traces' else 'log record'}",
                "bad_request",
            )
    return items


def parse_traces(body: bytes | bytearray, content_type: str) -> tuple[Any, int]:
    """(TraceView, span count) of a trace export body: the receivers' parse step."""
    view = decode_traces(body, content_type)
    return view, count_items(view, "traces")


def parse_logs(body: bytes | bytearray, content_type: str) -> tuple[ExportLogsServiceRequest, int]:
    """(ExportLogsServiceRequest, log record count) of a logs export body."""
    message = decode_logs(body, content_type)
    return message, count_items(message, "logs")


def encode(message: Any, content_type: str) -> bytes:
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return cast(bytes, message.SerializeToString())
