"""Intake parses trace exports into trace_view.TraceView, whose attributes are the bytes of OTLP's
KeyValues, decoded by intake.attributes. These tests hold it to the real opentelemetry-proto message."""

from __future__ import annotations

import base64
import json
import time

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from syncwatch.intake.attributes import AttributeDecoder, any_value
from syncwatch.intake.decode import JSON, PROTOBUF, decode_traces
from syncwatch.intake.extract import SpanExtractor
from syncwatch.intake.trace_view import TraceView, span_count

_keys = st.sampled_from(
    [
        "syncwatch.stage",
        "syncwatch.flow",
        "syncwatch.destination",
        "correlation_id",
        "http.response.status_code",
        "http.request.resend_count",
        "url.full",
        "ünïcode.key",
        "",
    ]
)
_values = st.one_of(
    st.text(max_size=30),
    st.text(min_size=100, max_size=300),  # lengths of two varint bytes
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=5), max_size=3),
)
_attributes = st.lists(st.tuples(_keys, _values), max_size=8, unique_by=lambda kv: kv[0])


def _set(kv, value) -> None:
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, bytes):
        kv.value.bytes_value = value
    elif isinstance(value, list):
        for item in value:
            kv.value.array_value.values.add().string_value = item
    else:
        kv.value.string_value = value


def _request(resource_attrs, spans) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in resource_attrs:
        kv = rs.resource.attributes.add()
        kv.key = key
        _set(kv, value)
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for i, (attrs, start) in enumerate(spans):
        span = ss.spans.add(
            trace_id=bytes([i + 1]) * 16,
            span_id=bytes([i + 1]) * 8,
            name=f"span {i}",
            kind=3,
            start_time_unix_nano=start,
            end_time_unix_nano=start + 50_000_000,
        )
        span.events.add(name="exception", time_unix_nano=start)
        span.status.code = 2
        for key, value in attrs:
            kv = span.attributes.add()
            kv.key = key
            _set(kv, value)
    return req


@settings(max_examples=200, deadline=None)
@given(
    _attributes,
    st.lists(st.tuples(_attributes, st.integers(min_value=0, max_value=2**64 - 1 - 50_000_000)), max_size=5),
)
def test_view_reads_what_opentelemetry_proto_reads(resource_attrs, spans):
    full = _request(resource_attrs, spans)
    view = TraceView.FromString(full.SerializeToString())
    decoder = AttributeDecoder()
    assert span_count(view) == len(spans)
    for full_rs, view_rs in zip(full.resource_spans, view.resource_spans, strict=True):
        assert {kv.key: any_value(kv.value) for kv in full_rs.resource.attributes} == decoder.of(
            view_rs.resource.attributes
        )
        for full_span, view_span in zip(full_rs.scope_spans[0].spans, view_rs.scope_spans[0].spans, strict=True):
            assert (view_span.trace_id, view_span.span_id) == (full_span.trace_id, full_span.span_id)
            assert (view_span.start_time_unix_nano, view_span.end_time_unix_nano) == (
                full_span.start_time_unix_nano,
                full_span.end_time_unix_nano,
            )
            assert {kv.key: any_value(kv.value) for kv in full_span.attributes} == decoder.of(view_span.attributes)


def test_json_and_protobuf_bodies_give_the_same_events():
    start = int(time.time() * 1e9)
    full = _request(
        [("syncwatch.flow", "orders")],
        [
            ([("syncwatch.stage", "source"), ("correlation_id", "SO-1"), ("syncwatch.source", "storefront")], start),
            (
                [
                    ("syncwatch.stage", "attempt"),
                    ("correlation_id", "SO-1"),
                    ("syncwatch.destination", "erp"),
                    ("http.response.status_code", 429),
                    ("http.request.resend_count", 2),
                ],
                start + 10,
            ),
            ([("url.full", "https://erp.example/health")], start + 20),
        ],
    )
    extractor = SpanExtractor(["correlation_id"])
    by_pb = extractor.extract(decode_traces(full.SerializeToString(), PROTOBUF), 1.0)
    otlp_json = json_format.MessageToDict(full)  # OTLP/JSON writes IDs as hex, not protobuf's base64
    for span in otlp_json["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["traceId"], span["spanId"] = (base64.b64decode(span[k]).hex() for k in ("traceId", "spanId"))
    by_json = extractor.extract(decode_traces(json.dumps(otlp_json).encode(), JSON), 1.0)
    assert by_pb.events == by_json.events
    assert [(e[2], e[3], e[4], e[6], e[10], e[11]) for e in by_pb.events] == [
        ("SO-1", "orders", 0, None, None, None),  # the flow comes from the resource
        ("SO-1", "orders", 1, "erp", 3, "429"),
    ]
    assert (by_pb.correlated, by_pb.uncorrelated, by_pb.rejected) == (2, 1, 0)


def test_the_correlation_key_of_highest_rank_wins_on_span_or_resource():
    start = int(time.time() * 1e9)
    stage = [("syncwatch.stage", "source"), ("syncwatch.flow", "orders")]
    full = _request(
        [("b", "from-resource")],
        [
            (stage + [("a", "from-span")], start),  # ranks above the resource's key
            (stage + [("c", "from-span")], start),  # ranks below it
            (stage, start),
        ],
    )
    out = SpanExtractor(["a", "b", "c"]).extract(decode_traces(full.SerializeToString(), PROTOBUF), 1.0)
    assert [e[2] for e in out.events] == ["from-span", "from-resource", "from-resource"]


def test_the_decoder_reads_any_encoding_refuses_bad_utf8_and_stays_bounded():
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from syncwatch.intake.attributes import MAX_REMEMBERED, BadAttribute, decode

    canonical = KeyValue(key="http.url", value={"string_value": "https://erp.example/orders"}).SerializeToString()
    value_first = canonical[canonical.index(b"\x12") :] + canonical[: canonical.index(b"\x12")]
    assert decode(canonical) == decode(value_first) == ("http.url", "https://erp.example/orders")
    assert decode(KeyValue(key="n", value={"int_value": -5}).SerializeToString()) == ("n", -5)
    assert decode(KeyValue(key="e", value={"string_value": ""}).SerializeToString()) == ("e", None)
    assert decode(KeyValue(key="u").SerializeToString()) == ("u", None)
    assert decode(KeyValue(key="b", value={"bytes_value": b""}).SerializeToString()) == ("b", None)
    assert decode(KeyValue(key="b", value={"bytes_value": b"\x01\xff"}).SerializeToString()) == ("b", "01ff")
    long = "é" * 200
    assert decode(KeyValue(key=long, value={"string_value": long}).SerializeToString()) == (long, long)
    bad_value = KeyValue(key="k", value={"string_value": "ab"}).SerializeToString().replace(b"ab", b"\xff\xfe")
    with pytest.raises(BadAttribute, match="'k' is not a valid OTLP value"):
        decode(bad_value)
    with pytest.raises(BadAttribute, match="key is not valid UTF-8"):
        decode(KeyValue(key="ab", value={"int_value": 1}).SerializeToString().replace(b"ab", b"\xc3("))
    decoder = AttributeDecoder()
    raws = [
        KeyValue(key="id", value={"string_value": f"order-{i}"}).SerializeToString() for i in range(3 * MAX_REMEMBERED)
    ]
    assert decoder.of(raws[:2] + [canonical, value_first]) == {
        "id": "order-1",
        "http.url": "https://erp.example/orders",
    }
    assert [decoder[raw][1] for raw in raws] == [f"order-{i}" for i in range(len(raws))]
    assert 0 < len(decoder) <= MAX_REMEMBERED


def test_a_resource_attribute_not_utf8_refuses_that_resource_s_spans_only():
    start = int(time.time() * 1e9)
    stage = [("syncwatch.stage", "source"), ("syncwatch.flow", "orders")]
    good = _request([("service.name", "storefront")], [(stage + [("correlation_id", "SO-1")], start)])
    bad = _request(
        [("service.name", "BADNAME")],
        [(stage + [("correlation_id", "SO-2")], start), (stage + [("correlation_id", "SO-3")], start)],
    )
    good.resource_spans.extend(bad.resource_spans)
    body = good.SerializeToString().replace(b"BADNAME", b"BAD\xffAME")
    out = SpanExtractor(["correlation_id"]).extract(decode_traces(body, PROTOBUF), 1.0)
    assert [e[2] for e in out.events] == ["SO-1"]
    assert out.rejected == 2
    assert out.error_message == "; ".join(
        f"span {span_id}: its resource's attribute 'service.name' is not a valid OTLP value (a string that is not UTF-8?)"
        for span_id in ("0101010101010101", "0202020202020202")
    )


def test_a_span_with_very_many_attributes_is_read_for_the_keys_syncwatch_uses():
    from syncwatch.intake.attributes import MAX_DECODED

    start = int(time.time() * 1e9)
    junk = [(f"junk.{i}", i) for i in range(3 * MAX_DECODED)]
    stage = [("syncwatch.stage", "attempt"), ("syncwatch.flow", "orders"), ("syncwatch.destination", "erp")]
    full = _request([], [(junk + stage + [("correlation_id", "SO-9"), ("http.response.status_code", 503)], start)])
    body = full.SerializeToString().replace(b"junk.7", b"junk\xff7")  # never decoded: not a key syncwatch reads
    extractor = SpanExtractor(["correlation_id"])
    out = extractor.extract(decode_traces(body, PROTOBUF), 1.0)
    assert [(e[2], e[3], e[4], e[6], e[11]) for e in out.events] == [("SO-9", "orders", 1, "erp", "503")]
    assert out.rejected == 0
    span = TraceView.FromString(body).resource_spans[0].scope_spans[0].spans[0]
    assert set(extractor.attributes.of(span.attributes)) == {
        "syncwatch.stage",
        "syncwatch.flow",
        "syncwatch.destination",
        "correlation_id",
        "http.response.status_code",
    }
