"""The view of an OTLP trace export that span intake parses: only the fields syncwatch reads.

`TraceView` is a protobuf message class built from a projection of opentelemetry-proto's
ExportTraceServiceRequest: the same field numbers and types for resource_spans > resource /
scope_spans > spans > trace_id, span_id, parent, name, kind, start/end time, attributes, links
and status, so any valid OTLP
protobuf body parses into it, and every other field is skipped by the parser.

One difference in shape, none on the wire: `attributes` is declared `repeated bytes` instead of
`repeated KeyValue`. Both are length-delimited on the wire, so each attribute arrives as the bytes of
its KeyValue and the parser builds no message object for it; intake.attributes decodes them into
a dict, remembering the attributes spans repeat (tests/test_trace_view.py proves the equivalence
with opentelemetry-proto on generated requests).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_PACKAGE = "syncwatch.intake"
_F = descriptor_pb2.FieldDescriptorProto

# (message, [(number, name, type, repeated, message type or None)]) in opentelemetry-proto's numbering.
_Field = tuple[int, str, Any, bool, str | None]
_MESSAGES: list[tuple[str, list[_Field]]] = [
    ("Link", [(1, "trace_id", _F.TYPE_BYTES, False, None), (2, "span_id", _F.TYPE_BYTES, False, None)]),
    ("Status", [(2, "message", _F.TYPE_STRING, False, None), (3, "code", _F.TYPE_INT32, False, None)]),
    ("Resource", [(1, "attributes", _F.TYPE_BYTES, True, None)]),
    (
        "Span",
        [
            (1, "trace_id", _F.TYPE_BYTES, False, None),
            (2, "span_id", _F.TYPE_BYTES, False, None),
            (4, "parent_span_id", _F.TYPE_BYTES, False, None),
            (5, "name", _F.TYPE_STRING, False, None),
            (6, "kind", _F.TYPE_INT32, False, None),  # the SpanKind enum's numbers
            (7, "start_time_unix_nano", _F.TYPE_FIXED64, False, None),
            (8, "end_time_unix_nano", _F.TYPE_FIXED64, False, None),
            (9, "attributes", _F.TYPE_BYTES, True, None),  # each a KeyValue's bytes (attributes.py)
            # For the mapping rules (syncwatch.rules): linked spans and the span status.
            (13, "links", _F.TYPE_MESSAGE, True, ".syncwatch.intake.Link"),
            (15, "status", _F.TYPE_MESSAGE, False, ".syncwatch.intake.Status"),
        ],
    ),
    ("ScopeSpans", [(2, "spans", _F.TYPE_MESSAGE, True, ".syncwatch.intake.Span")]),
    (
        "ResourceSpans",
        [
            (1, "resource", _F.TYPE_MESSAGE, False, ".syncwatch.intake.Resource"),
            (2, "scope_spans", _F.TYPE_MESSAGE, True, ".syncwatch.intake.ScopeSpans"),
        ],
    ),
    # Named as in OTLP, so parse errors name the message an integration sent.
    ("ExportTraceServiceRequest", [(1, "resource_spans", _F.TYPE_MESSAGE, True, ".syncwatch.intake.ResourceSpans")]),
]


def _build() -> type[Message]:
    file = descriptor_pb2.FileDescriptorProto(
        name="syncwatch/intake/trace_view.proto",
        package=_PACKAGE,
        syntax="proto3",
    )
    for name, fields in _MESSAGES:
        message = file.message_type.add(name=name)
        for number, field_name, field_type, repeated, type_name in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                type=field_type,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest"))


# A generated message class: its fields are known at run time only, so the type checker sees Any.
TraceView: Any = _build()


def view_of(request: Message) -> Any:
    """The view of a full ExportTraceServiceRequest (from OTLP/JSON, or built in-process)."""
    return TraceView.FromString(request.SerializeToString())


def span_count(view: Any) -> int:
    return sum(len(ss.spans) for rs in view.resource_spans for ss in rs.scope_spans)
