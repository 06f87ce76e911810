"""Round trip through a real sidecar: the OpenTelemetry SDK exports spans and payload logs (OTLP
HTTP and gRPC); the API and the CLI give back redacted payloads linked to the right attempts."""

import json
import time

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from otel_helpers import NS, Integration
from sidecar import free_port, transactions_cli

TOKEN = "roundtrip-token-0123"
CARD = "4111111111111111"
EMAIL = "jane.doe@example.com"


class PayloadIntegration(Integration):
    """An integration that also logs each attempt's request and response bodies as OTLP logs."""

    def __init__(self, sidecar, transport="http"):
        super().__init__(sidecar, transport)
        exporter = (
            GrpcLogExporter(endpoint=sidecar.otlp_grpc, insecure=True)
            if transport == "grpc"
            else HttpLogExporter(endpoint=sidecar.otlp_http + "/v1/logs")
        )
        self.logs = LoggerProvider()
        self.logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        self.logger = self.logs.get_logger("syncwatch-tests")

    def attempt_with_payloads(self, corr, flow, dest, start, end, request, response, code=None, resend=None):
        attrs = {
            "syncwatch.stage": "attempt",
            "syncwatch.flow": flow,
            "syncwatch.destination": dest,
            "syncwatch.correlation_id": corr,
        }
        if code is not None:
            attrs["http.response.status_code"] = code
        if resend:
            attrs["http.request.resend_count"] = resend
        span = self.tracer.start_span("attempt", start_time=int(start * NS), attributes=attrs)
        ctx = trace.set_span_in_context(span)
        for direction, body in (("request", request), ("response", response)):
            if body is not None:
                self.logger.emit(
                    body=body,
                    context=ctx,
                    timestamp=int(start * NS),
                    attributes={
                        "syncwatch.correlation_id": corr,
                        "syncwatch.payload.direction": direction,
                        "syncwatch.flow": flow,
                        "syncwatch.destination": dest,
                    },
                )
        span.end(end_time=int(end * NS))
        return format(span.get_span_context().span_id, "016x")

    def close(self):
        super().close()
        self.logs.shutdown()


def cli(sidecar, *args, token=TOKEN):
    return transactions_cli(sidecar, *args, token=token)


@pytest.fixture(params=["http", "grpc"])
def transport(request):
    return request.param


def test_payloads_round_trip_redacted_and_linked_to_their_attempts(make_sidecar, transport):
    sc = make_sidecar({"api": {"token": TOKEN}, "flows": {"orders": {"destinations": ["erp"], "deadline": "2s"}}})
    it = PayloadIntegration(sc, transport)
    t = time.time()
    order = {"order_id": "SO-1", "customer": {"email": EMAIL}, "payment": {"card_number": CARD, "cvv": "123"}}
    it.source("ord-1", "orders", t)
    first = it.attempt_with_payloads(
        "ord-1", "orders", "erp", t + 0.1, t + 0.2, json.dumps(order), "Service Unavailable, retry later", code=503
    )
    second = it.attempt_with_payloads(
        "ord-1",
        "orders",
        "erp",
        t + 1.2,
        t + 1.3,
        order,  # a key-value map body
        json.dumps({"erp_doc": "4711", "contact": EMAIL}),
        code=201,
        resend=1,
    )
    it.confirm("ord-1", "orders", "erp", t + 1.4, t + 1.5)
    it.source("ord-late", "orders", t)
    it.attempt_with_payloads("ord-late", "orders", "erp", t + 0.1, t + 0.2, b"\xff\x00raw bytes", None, code=429)
    it.logger.emit(body="just a log line", attributes={"syncwatch.correlation_id": "ord-1"})
    it.close()

    assert sc.metric("syncwatch_snapshots_total", direction="request", result="stored") == 3
    assert sc.metric("syncwatch_snapshots_total", direction="response", result="stored") == 2
    assert sc.metric("syncwatch_log_records_total", result="not_payload") == 1
    assert sc.metric("syncwatch_snapshot_redactions_total", kind="card_number") == 2

    status, raw = sc.get("/api/v1/transactions/ord-1", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, raw
    assert CARD.encode() not in raw and EMAIL.encode() not in raw
    (erp,) = json.loads(raw)["destinations"]
    assert erp["state"] == "confirmed" and erp["lag_seconds"] == pytest.approx(1.5, abs=0.01)
    a1, a2 = erp["attempts"]
    assert (a1["span_id"], a1["code"], a2["span_id"], a2["code"]) == (first, "503", second, "201")
    assert a2["backoff_seconds"] == pytest.approx(1.0, abs=0.01)
    assert [s["direction"] for s in a1["snapshots"]] == ["request", "response"]
    assert a1["snapshots"][0]["body"]["payment"]["card_number"].startswith("[REDACTED:card_number:")
    assert a1["snapshots"][1]["body"] == "Service Unavailable, retry later"
    assert a2["snapshots"][0]["body"]["customer"]["email"].startswith("[REDACTED:email:")
    assert a2["snapshots"][1]["body"]["erp_doc"] == "4711"
    assert json.loads(raw)["unlinked_snapshots"] == []

    # The CLI, against the running sidecar.
    shown = cli(sc, "show", "ord-1")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "storefront -> erp  flow orders  state CONFIRMED" in out
    assert "attempt 1: 503" in out and "attempt 2: 201" in out and "after 1.000s backoff" in out
    assert out.index("attempt 1: 503") < out.index("REQUEST payload") < out.index("attempt 2: 201")
    assert '"card_number": "[REDACTED:card_number:' in out  # pretty-printed JSON
    assert CARD not in out and EMAIL not in out
    as_json = cli(sc, "show", "ord-1", "--json")
    assert json.loads(as_json.stdout)["destinations"][0]["attempts"][1]["snapshots"][0]["direction"] == "request"

    time.sleep(max(0.0, t + 2.3 - time.time()))  # past the 2 s deadline
    listed = cli(sc, "list", "--state", "overdue", "--flow", "orders")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["CORRELATION", "ID", "FLOW", "SOURCE"]
    (row,) = [line for line in lines if line.startswith("ord-late")]
    assert row.split()[1:5] == ["orders", "storefront", "erp", "overdue"] and row.split()[-1] == "429"
    assert lines[-1] == "1 overdue transaction(s)"
    items = json.loads(cli(sc, "list", "--state", "overdue", "--json").stdout)["items"]
    assert [i["correlation_id"] for i in items] == ["ord-late"]
    late = json.loads(cli(sc, "show", "ord-late", "--json").stdout)
    (snap,) = late["destinations"][0]["attempts"][0]["snapshots"]
    assert snap["content_type"] == "binary" and snap["body_encoding"] == "base64"


def test_a_failing_snapshot_store_does_not_touch_trace_intake(make_sidecar):
    # S3 backend on a port where nothing listens: every snapshot write fails.
    sc = make_sidecar(
        {"snapshots": {"backend": "s3://bucket/p", "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}},
        env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
    )
    it = PayloadIntegration(sc, "http")
    t = time.time()
    it.source("ord-2", "orders", t)
    it.attempt_with_payloads("ord-2", "orders", "erp", t + 0.1, t + 0.2, '{"a":1}', '{"b":2}', code=201)
    it.confirm("ord-2", "orders", "erp", t + 0.3, t + 0.4)
    it.close()
    assert (
        sc.metric(
            "syncwatch_transactions_total", flow="orders", source="storefront", destination="erp", outcome="confirmed"
        )
        == 1
    )
    assert sc.metric("syncwatch_snapshots_total", direction="request", result="dropped") == 1
    assert sc.metric("syncwatch_snapshots_total", direction="response", result="dropped") == 1
    assert sc.metric("syncwatch_dropped_total", reason="snapshot_store_unavailable") == 2
    assert sc.metric("syncwatch_snapshot_store_up") == 0
