"""A storefront and an order worker instrumented only with stock OpenTelemetry packages (pika and
requests over RabbitMQ; botocore, boto3sqs and httpx over SQS): no syncwatch attribute anywhere.
Run as processes by tests/test_rules_e2e.py:

    python tests/support/rules_apps.py storefront OTLP_URL VHOST ORDERS_JSON [SPANS_FILE]
    python tests/support/rules_apps.py worker OTLP_URL VHOST ERP_URL COUNT [SPANS_FILE]
    python tests/support/rules_apps.py sqs-storefront OTLP_URL QUEUE_URL ORDERS_JSON [SPANS_FILE]
    python tests/support/rules_apps.py sqs-worker OTLP_URL QUEUE_URL ERP_URL COUNT [SPANS_FILE]
    python tests/support/rules_apps.py aio OTLP_URL VHOST ERP_URL ORDERS_JSON
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


def setup(service: str, otlp_url: str, spans_file: str | None, sqs: bool = False) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_url + "/v1/traces")))
    if spans_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(spans_file)))
    trace.set_tracer_provider(provider)
    if sqs:  # what `opentelemetry-bootstrap` installs for a boto3 + httpx app: botocore and boto3sqs both
        from opentelemetry.instrumentation.boto3sqs import Boto3SQSInstrumentor
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        BotocoreInstrumentor().instrument()
        Boto3SQSInstrumentor().instrument()
        HTTPXClientInstrumentor().instrument()
    else:
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


def sqs_client(queue_url: str):
    import boto3

    endpoint = queue_url.split("/", 3)[:3]
    return boto3.client("sqs", endpoint_url="/".join(endpoint), region_name="us-east-1")


def sqs_storefront(otlp_url: str, queue_url: str, orders_json: str, spans_file: str | None = None) -> None:
    """Sends each order to SQS; the order ID is only in the body, which no instrumentation records."""
    provider = setup("sqs-storefront", otlp_url, spans_file, sqs=True)
    sqs = sqs_client(queue_url)
    for order in json.loads(orders_json):
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(order))
        if HELPER:
            helper().source_changed(order["id"])
    provider.shutdown()


def sqs_worker(otlp_url: str, queue_url: str, erp_url: str, count: str, spans_file: str | None = None) -> None:
    """Receives one message at a time, PUTs the order to the ERP by its ID (httpx), deletes the message.
    One at a time: boto3sqs puts every message of a receive batch in the receive span's trace."""
    import httpx

    provider = setup("sqs-worker", otlp_url, spans_file, sqs=True)
    sqs = sqs_client(queue_url)
    left = int(count)
    while left:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
        for message in got.get("Messages", []):  # boto3sqs: a `process` span per message, linked to its send
            order = json.loads(message["Body"])
            sw = helper() if HELPER else None
            r = None
            if not order.get("skip"):
                for n in range(MAX_ATTEMPTS):
                    r = None
                    try:
                        if sw is None:
                            r = httpx.put(f"{erp_url}/orders/{order['id']}", json=order, timeout=0.5)
                        else:
                            with sw.attempt(order["id"], resend_count=n) as a:
                                r = httpx.put(f"{erp_url}/orders/{order['id']}", json=order, timeout=0.5)
                                a.response(r.status_code)
                    except httpx.HTTPError:
                        time.sleep(0.05)
                        continue
                    if r.status_code < 300 or (r.status_code < 500 and r.status_code != 429):
                        break
                    time.sleep(0.05)
                if sw is not None:
                    if r is not None and r.status_code < 300:
                        sw.confirm(order["id"])
                    else:
                        code = "gave_up" if r is None or r.status_code >= 429 else str(r.status_code)
                        sw.fail(order["id"], error_type=code)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            left -= 1
    provider.shutdown()


def aio(otlp_url: str, vhost: str, erp_url: str, orders_json: str) -> None:
    """aio-pika and aiohttp-client: publishes each order (ID in correlation_id), consumes it and
    POSTs it until a 2xx or a non-retryable answer, at most MAX_ATTEMPTS times."""
    import asyncio

    import aio_pika
    import aiohttp
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": "aio-integration"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_url + "/v1/traces")))
    trace.set_tracer_provider(provider)
    AioPikaInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    orders = json.loads(orders_json)

    async def run() -> None:
        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
        channel = await conn.channel()
        queue = await channel.declare_queue(QUEUE, durable=True)
        for order in orders:
            message = aio_pika.Message(json.dumps(order).encode(), correlation_id=order["id"])
            await channel.default_exchange.publish(message, routing_key=QUEUE)
        done = asyncio.Event()
        left = [len(orders)]
        async with aiohttp.ClientSession() as session:
            # A consume callback: aio-pika's instrumentation runs it inside the CONSUMER span, so the
            # POSTs are its children (with `queue.iterator()` they would start traces of their own).
            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    order = json.loads(message.body)
                    for _ in range(MAX_ATTEMPTS):
                        async with session.post(erp_url + "/orders", json=order) as r:
                            if r.status < 300 or (r.status < 500 and r.status != 429):
                                break
                left[0] -= 1
                if left[0] == 0:
                    done.set()

            await queue.consume(on_message)
            await asyncio.wait_for(done.wait(), 30)
        await conn.close()

    asyncio.run(run())
    provider.shutdown()


if __name__ == "__main__":
    apps = {"storefront": storefront, "worker": worker, "sqs-storefront": sqs_storefront, "sqs-worker": sqs_worker}
    apps["aio"] = aio
    apps[sys.argv[1]](*sys.argv[2:])
