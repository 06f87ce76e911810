"""Snapshot test data shared by the snapshot, redaction and API tests: OTLP log requests built by
hand, an order body carrying the secrets that must never be stored, and a clock the test moves."""

from __future__ import annotations

import json

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from syncwatch.metrics.registry import Metrics

HOUR = 3600.0
T0 = 1_800_000_000.0
SECRETS = ("hunter2", "4111111111111111", "jane.doe@example.com", "DE89370400440532013000", "sk_live_abc123")


def any_value(v) -> AnyValue:
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(x)) for k, x in v.items())
        return out
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    raise TypeError(type(v))


def make_request(*records: dict) -> ExportLogsServiceRequest:
    """records: {body, corr, direction, trace_id, span_id, attrs}; omit direction for a plain log."""
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for r in records:
        rec = scope.log_records.add()
        if r.get("body") is not None:
            rec.body.CopyFrom(any_value(r["body"]))
        attrs = dict(r.get("attrs") or {})
        if r.get("corr"):
            attrs["syncwatch.correlation_id"] = r["corr"]
        if r.get("direction"):
            attrs["syncwatch.payload.direction"] = r["direction"]
        rec.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in attrs.items())
        rec.trace_id = r.get("trace_id", b"\x01" * 16)
        rec.span_id = r.get("span_id", b"\x02" * 8)
        if r.get("time"):
            rec.time_unix_nano = int(r["time"] * 1e9)
    return req


def order_body(i: int = 1) -> str:
    return json.dumps(
        {
            "order_id": f"SO-{i}",
            "customer": {"email": "jane.doe@example.com", "password": "hunter2"},
            "payment": {"card_number": "4111111111111111", "iban": "DE89370400440532013000"},
            "note": "api key sk_live_abc123",
            "lines": [{"sku": "A-1", "qty": 2}],
        }
    )


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def sample(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0
