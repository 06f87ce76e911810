"""OTLP error semantics: bad bodies get the right 4xx (never a 5xx or a crash), every refusal is counted."""

import gzip
import json
import sqlite3
import threading
import time

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from otlp_raw import post, stage_request

from syncwatch.intake.decode import OtlpError, decode, decode_traces
from syncwatch.intake.extract import SpanExtractor

PB, JS = "application/x-protobuf", "application/json"


def _valid_request(n=3, t0=None):
    t0 = t0 or time.time() - 10
    return stage_request(
        [
            {
                "_start": t0,
                "syncwatch.stage": "source",
                "syncwatch.flow": "orders",
                "syncwatch.source": "storefront",
                "correlation_id": f"order-e{i}",
            }
            for i in range(n)
        ]
    )


@pytest.fixture
def small(make_sidecar):
    return make_sidecar({"intake": {"max_body_bytes": 4096}})


def test_unknown_content_type_is_415(small):
    status, _, body = post(small.otlp_http + "/v1/traces", b"hello", "text/plain")
    assert status == 415
    assert small.metric("syncwatch_otlp_requests_total", signal="traces", code="415") == 1
    assert small.metric("syncwatch_dropped_total", reason="unsupported_media_type") == 1


@pytest.mark.parametrize(
    "content_type,body",
    [
        (PB, b"\xff\xff\xff\xff garbage"),
        (PB, _valid_request(5).SerializeToString()[:-7]),  # truncated
        (JS, b"{not json"),
        (JS, b'{"resourceSpans": "should be a list"}'),
        (JS, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz-not-hex"}]}]}]}'),
        (JS, b"[1, 2, 3]"),
    ],
)
def test_malformed_truncated_and_wrongly_typed_bodies_are_400(small, content_type, body):
    status, _, resp = post(small.otlp_http + "/v1/traces", body, content_type)
    assert status == 400, resp
    assert small.metric("syncwatch_otlp_requests_total", signal="traces", code="400") == 1
    assert small.metric("syncwatch_dropped_total", reason="bad_request") == 1
    if content_type == JS:  # the same mistakes in a logs body
        body = body.replace(b"resourceSpans", b"resourceLogs").replace(b"scopeSpans", b"scopeLogs")
        body = body.replace(b'"spans"', b'"logRecords"')
    status, _, _ = post(small.otlp_http + "/v1/logs", body, content_type)
    assert status == 400


def test_oversized_body_is_413_even_when_gzip_hides_it(small):
    big = _valid_request(200).SerializeToString()
    assert len(big) > 4096
    status, _, _ = post(small.otlp_http + "/v1/traces", big)
    assert status == 413
    bomb = gzip.compress(b"\x00" * 1_000_000)  # 1 MB of zeros in ~1 KB
    status, _, _ = post(small.otlp_http + "/v1/traces", bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert small.metric("syncwatch_otlp_requests_total", signal="traces", code="413") == 2
    assert small.metric("syncwatch_dropped_total", reason="too_large") == 2


def test_a_request_with_more_spans_than_the_queue_holds_is_413(make_sidecar):
    """One request can no longer take the writer for as long as it likes: over intake.max_queued_spans
    it is refused (not retryable), counted per span; a request at the limit goes through."""
    sc = make_sidecar({"intake": {"max_queued_spans": 10}})
    status, _, _ = post(sc.otlp_http + "/v1/traces", _valid_request(11).SerializeToString())
    assert status == 413
    assert sc.metric("syncwatch_dropped_total", reason="too_large") == 11
    status, _, _ = post(sc.otlp_http + "/v1/traces", _valid_request(10).SerializeToString())
    assert status == 200


def test_gzip_protobuf_and_json_with_hex_ids_are_accepted(sidecar):
    body = gzip.compress(_valid_request(2).SerializeToString())
    status, headers, resp = post(sidecar.otlp_http + "/v1/traces", body, headers={"Content-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"].startswith(PB)
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "confirm",
                                "startTimeUnixNano": str(int((time.time() - 5) * 1e9)),
                                "endTimeUnixNano": str(int((time.time() - 4) * 1e9)),
                                "attributes": [
                                    {"key": "syncwatch.stage", "value": {"stringValue": "confirm"}},
                                    {"key": "syncwatch.flow", "value": {"stringValue": "orders"}},
                                    {"key": "peer.service", "value": {"stringValue": "erp"}},
                                    {"key": "correlation_id", "value": {"stringValue": "order-e0"}},
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    status, headers, resp = post(sidecar.otlp_http + "/v1/traces", json.dumps(doc).encode(), JS)
    assert status == 200 and headers["Content-Type"].startswith(JS)
    tx = dict(flow="orders", source="storefront", destination="erp")
    assert sidecar.metric("syncwatch_transactions_total", outcome="confirmed", **tx) == 1
    assert sidecar.metric("syncwatch_transactions_pending", **tx) == 1  # order-e1 still open
    assert sidecar.metric("syncwatch_spans_total", result="correlated") == 3


def test_invalid_spans_are_rejected_with_partial_success(sidecar):
    t0 = time.time()
    req = stage_request(
        [
            {"_start": t0, "syncwatch.stage": "sent", "syncwatch.flow": "orders", "correlation_id": "o1"},
            {"_start": t0, "syncwatch.stage": "confirm", "correlation_id": "o2", "syncwatch.destination": "erp"},
            {"_start": t0, "syncwatch.stage": "attempt", "syncwatch.flow": "orders", "correlation_id": "o3"},
            {
                "_start": t0,
                "syncwatch.stage": "source",
                "syncwatch.flow": "orders",
                "correlation_id": "o4",
                "syncwatch.source.changed_at": "yesterday",
            },
            {
                "_start": t0,
                "syncwatch.stage": "source",
                "syncwatch.flow": "orders",
                "correlation_id": "o5",
                "syncwatch.source.changed_at": "2026-11-27T10:00:00Z",
            },
        ]
    )
    status, _, body = post(sidecar.otlp_http + "/v1/traces", req.SerializeToString())
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 4
    msg = resp.partial_success.error_message
    assert "syncwatch.stage must be" in msg and "syncwatch.flow is missing" in msg
    assert "no destination" in msg and "changed_at" in msg
    assert sidecar.metric("syncwatch_spans_total", result="rejected") == 4
    assert sidecar.metric("syncwatch_dropped_total", reason="invalid_span") == 4
    assert sidecar.metric("syncwatch_spans_total", result="correlated") == 1


def test_grpc_malformed_message_is_invalid_argument(sidecar):
    with grpc.insecure_channel(sidecar.otlp_grpc) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as err:
            export(b"\xff\xff\xff\xff", timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert export(_valid_request(1).SerializeToString(), timeout=5) == b""
    assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code="400") == 1
    assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code="200") == 1


def test_backpressure_503_with_retry_after_and_ledger_failure_503(make_sidecar):
    sc = make_sidecar({"intake": {"max_queued_spans": 5}})
    db = sqlite3.connect(sc.workdir / "data" / "ledger.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # the ledger cannot write: its writer waits, the queue fills
    results = []
    first = threading.Thread(
        target=lambda: results.append(
            post(sc.otlp_http + "/v1/traces", _valid_request(5).SerializeToString(), timeout=30)
        )
    )
    first.start()
    time.sleep(0.5)
    status, headers, _ = post(sc.otlp_http + "/v1/traces", _valid_request(5).SerializeToString())
    assert status == 503 and headers["Retry-After"] == "1"
    assert sc.metric("syncwatch_dropped_total", reason="backpressure") == 5
    first.join()  # the writer gives up after SQLite's busy timeout: the sender is told to retry
    assert results[0][0] == 503 and results[0][1]["Retry-After"] == "1"
    assert sc.metric("syncwatch_dropped_total", reason="ledger_unavailable") == 5
    assert sc.get("/readyz")[0] == 503
    db.execute("ROLLBACK")
    db.close()
    status, _, _ = post(sc.otlp_http + "/v1/traces", _valid_request(5).SerializeToString())
    assert status == 200
    assert sc.get("/readyz")[0] == 200
    assert sc.metric("syncwatch_otlp_requests_total", signal="traces", code="503") == 2


# ---- fuzzing both decoders in-process: any input is a message or a 400, never anything else ----


def test_a_span_with_an_attribute_that_is_not_utf8_is_refused_alone(sidecar):
    """Protobuf would refuse the whole request for one string that is not UTF-8; intake decodes
    attributes per span, so only that span is refused (and counted), the others are recorded."""
    t0 = time.time()
    spans = [
        {
            "_start": t0,
            "syncwatch.stage": "source",
            "syncwatch.flow": "orders",
            "syncwatch.source": f"storefront{i}",
            "correlation_id": f"order-u{i}",
        }
        for i in range(3)
    ]
    body = stage_request(spans).SerializeToString()
    assert body.count(b"storefront1") == 1
    status, _, answer = post(sidecar.otlp_http + "/v1/traces", body.replace(b"storefront1", b"storefro\xff\xfe1"))
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(answer)
    assert resp.partial_success.rejected_spans == 1
    assert "'syncwatch.source' is not a valid OTLP value" in resp.partial_success.error_message
    assert sidecar.metric("syncwatch_spans_total", result="rejected") == 1
    assert sidecar.metric("syncwatch_dropped_total", reason="invalid_span") == 1
    assert sidecar.metric("syncwatch_spans_total", result="correlated") == 2


_extractor = SpanExtractor(["correlation_id"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_protobuf_decoder(data):
    for decoder in (decode_traces, lambda b, ct: decode(b, ct, ExportLogsServiceRequest)):
        try:
            msg = decoder(data, PB)
        except OtlpError as err:
            assert err.status == 400
            continue
        if decoder is decode_traces:
            _extractor.extract(msg, time.time())


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "startTimeUnixNano",
                    "resourceLogs",
                    "logRecords",
                    "body",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_fuzz_json_decoder(doc):
    body = json.dumps(doc).encode()
    for decoder in (decode_traces, lambda b, ct: decode(b, ct, ExportLogsServiceRequest)):
        try:
            msg = decoder(body, JS)
        except OtlpError as err:
            assert err.status == 400
            continue
        if decoder is decode_traces:
            _extractor.extract(msg, time.time())
