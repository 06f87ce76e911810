"""A storefront and an order worker instrumented only with stock OpenTelemetry packages (pika,
requests): no syncwatch attribute anywhere. Run as processes by tests/test_rules_e2e.py:

    python tests/support/rules_apps.py storefront OTLP_URL VHOST ORDERS_JSON [SPANS_FILE]
    python tests/support/rules_apps.py worker OTLP_URL VHOST ERP_URL COUNT [SPANS_FILE]
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Sequence

import pika
import requests
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

QUEUE = "orders"
# SW_HELPER=1: the same apps also call syncwatch's helper (syncwatch_instrument), for comparison.
HELPER = os.environ.get("SW_HELPER") == "1"
MAX_ATTEMPTS = 3  # the worker's own retry policy: gives up after 3 attempts


class JsonLinesExporter(SpanExporter):
    """OTLP/JSON, one export per line, hex IDs: what the Collector's file exporter writes."""

    def __init__(self, path: str):
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        doc = json_format.MessageToDict(encode_spans(spans))
        for rs in doc.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    for item in [span, *span.get("links", [])]:
                        for key in ("traceId", "spanId", "parentSpanId"):
                            if key in item:
                                item[key] = base64.b64decode(item[key]).hex()
        with open(self.path, "a") as f:
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def setup(service: str, otlp_url: str, spans_file: str | None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_url + "/v1/traces")))
    if spans_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(spans_file)))
    trace.set_tracer_provider(provider)
    PikaInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    return provider


def connect(vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, vhost, pika.PlainCredentials("guest", "guest"))
    )


def storefront(otlp_url: str, vhost: str, orders_json: str, spans_file: str | None = None) -> None:
    provider = setup("storefront", otlp_url, spans_file)
    conn = connect(vhost)
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True)
    for order in json.loads(orders_json):
        # The order ID in a message property: pika's instrumentation records it (correlation_id).
        props = pika.BasicProperties(correlation_id=order["id"], content_type="application/json")
        ch.basic_publish("", QUEUE, json.dumps(order).encode(), props)
        if HELPER:
            helper().source_changed(order["id"])
    conn.close()
    provider.shutdown()


def helper():
    from syncwatch_instrument import SyncInstrument

    return SyncInstrument(flow="orders", source="storefront", destination="erp")


def post(sw, order: dict, n: int, erp_url: str):
    if sw is None:
        return requests.post(erp_url + "/orders", json=order, timeout=0.5)
    with sw.attempt(order["id"], resend_count=n) as a:
        r = requests.post(erp_url + "/orders", json=order, timeout=0.5)
        a.response(r.status_code)
        return r


def worker(otlp_url: str, vhost: str, erp_url: str, count: str, spans_file: str | None = None) -> None:
    provider = setup("order-worker", otlp_url, spans_file)
    conn = connect(vhost)
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True)
    left = [int(count)]
    requests.get(erp_url + "/health", timeout=5)  # a span of no flow: unrelated, not uncorrelated

    def on_message(channel, method, properties, body) -> None:
        order = json.loads(body)
        if not order.get("skip"):  # the silent loss: acked, never posted
            sw = helper() if HELPER else None
            for n in range(MAX_ATTEMPTS):
                r = None
                try:
                    r = post(sw, order, n, erp_url)
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
                if r.status_code < 300 or (r.status_code < 500 and r.status_code != 429):
                    break  # done, or a 4xx retrying will not fix
                time.sleep(0.05)
            if sw is not None:
                if r is not None and r.status_code < 300:
                    sw.confirm(order["id"])
                else:
                    sw.fail(
                        order["id"], error_type="gave_up" if r is None or r.status_code >= 429 else str(r.status_code)
                    )
        channel.basic_ack(method.delivery_tag)
        left[0] -= 1
        if left[0] == 0:
            channel.stop_consuming()

    ch.basic_consume(QUEUE, on_message)
    ch.start_consuming()
    conn.close()
    provider.shutdown()


if __name__ == "__main__":
    {"storefront": storefront, "worker": worker}[sys.argv[1]](*sys.argv[2:])
