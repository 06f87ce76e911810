"""Payload snapshots out of OTLP log records.

A log record is a payload snapshot when it carries `syncwatch.payload.direction`; its body is the
payload (string, bytes or key-value map), its trace/span IDs name the delivery attempt, and its
attributes carry the correlation ID (first present of the configured keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from syncwatch.intake.ids import correlation_problem

DIRECTION_ATTR = "syncwatch.payload.direction"
DIRECTIONS = ("request", "response")
FLOW_ATTR = "syncwatch.flow"
DESTINATION_ATTRS = ("syncwatch.destination", "peer.service", "server.address")
SOURCE_ATTR = "syncwatch.source"  # the writer, for the payload audits
IDEMPOTENCY_KEY_ATTR = "syncwatch.idempotency_key"
RECORD_ID_ATTR = "syncwatch.destination.record_id"
MAX_CORRELATION_ID = 256  # characters; the sidecar passes limits.max_correlation_id_length


@dataclass
class PayloadRecord:
    direction: str | None  # None: not a payload; "invalid": attribute present, value unknown
    corr: str | None
    body: Any  # str | bytes | dict | list | scalar | None
    trace_id: bytes
    span_id: bytes
    time: float | None
    flow: str | None
    destination: str | None
    corr_too_long: bool = False  # the ID attribute is there, longer than the limit (corr is None)
    corr_invalid: bool = False  # the ID attribute is there, with control characters (corr is None)
    source: str | None = None
    idempotency_key: str | None = None
    record_id: str | None = None


AUDIT_ATTRS = (SOURCE_ATTR, IDEMPOTENCY_KEY_ATTR, RECORD_ID_ATTR)


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def _scalar_attr(v: AnyValue) -> str | None:
    kind = v.WhichOneof("value")
    if kind in ("string_value", "int_value"):
        return str(getattr(v, kind))
    return None


def payload_records(
    request: ExportLogsServiceRequest, correlation_keys: list[str], max_correlation_id: int = MAX_CORRELATION_ID
) -> Iterator[PayloadRecord]:
    wanted = set(correlation_keys) | {DIRECTION_ATTR, FLOW_ATTR, *DESTINATION_ATTRS, *AUDIT_ATTRS}
    for rl in request.resource_logs:
        resource_attrs = {kv.key: kv.value for kv in rl.resource.attributes if kv.key in wanted}
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                attrs = dict(resource_attrs)
                for kv in rec.attributes:
                    key = kv.key
                    if key in wanted:
                        attrs[key] = kv.value
                direction_value = attrs.get(DIRECTION_ATTR)
                if direction_value is None:
                    yield PayloadRecord(None, None, None, b"", b"", None, None, None)
                    continue
                direction = (_scalar_attr(direction_value) or "").strip().lower()
                if direction not in DIRECTIONS:
                    direction = "invalid"
                corr = None
                too_long = invalid = False
                for key in correlation_keys:  # the first one present decides, as for spans
                    if key in attrs:
                        value = _scalar_attr(attrs[key])
                        if value:
                            problem = correlation_problem(value, max_correlation_id)
                            too_long = problem is not None and len(value) > max_correlation_id
                            invalid = problem is not None and not too_long
                            corr = None if problem else value
                            break
                destination = None
                for key in DESTINATION_ATTRS:
                    if key in attrs and (destination := _scalar_attr(attrs[key])):
                        break
                ts = rec.time_unix_nano or rec.observed_time_unix_nano
                body = None
                if rec.HasField("body"):
                    b = rec.body
                    kind = b.WhichOneof("value")
                    # A string body (the usual payload) without the generic conversion's calls.
                    body = b.string_value if kind == "string_value" else any_value(b)
                yield PayloadRecord(
                    direction=direction,
                    corr=corr,
                    body=body,
                    trace_id=bytes(rec.trace_id),
                    span_id=bytes(rec.span_id),
                    time=ts / 1e9 if ts else None,
                    flow=_scalar_attr(attrs[FLOW_ATTR]) if FLOW_ATTR in attrs else None,
                    destination=destination,
                    corr_too_long=too_long,
                    corr_invalid=invalid,
                    source=_scalar_attr(attrs[SOURCE_ATTR]) if SOURCE_ATTR in attrs else None,
                    idempotency_key=_scalar_attr(attrs[IDEMPOTENCY_KEY_ATTR])
                    if IDEMPOTENCY_KEY_ATTR in attrs
                    else None,
                    record_id=_scalar_attr(attrs[RECORD_ID_ATTR]) if RECORD_ID_ATTR in attrs else None,
                )
