"""The queue between storefront and middleware, with a dead-letter queue behind it.

SQS (default): moto's server in a subprocess, so the real SQS collector samples it through boto3.
The worker gets one attempt per receive; a failed attempt hides the message for the fixed retry
interval (its visibility timeout), and the redrive policy's maxReceiveCount moves it to the DLQ
after the last attempt, as a real SQS queue does.

RabbitMQ (`--rabbitmq URL`): a durable queue whose dead-letter exchange routes into the DLQ. The
worker holds the unacked message between attempts and rejects it (no requeue) to dead-letter it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Delivery:
    body: dict[str, Any]
    attempt: int  # 1 on the first delivery attempt
    handle: Any  # broker-specific: SQS receipt handle, aio-pika message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SqsQueue:
    broker = "sqs"

    def __init__(self, max_attempts: int, run_id: str | None = None):
        self.max_attempts = max_attempts
        run_id = run_id or uuid.uuid4().hex[:8]
        self.queue_name = f"storefront-to-erp-{run_id}"
        self.dlq_name = f"storefront-to-erp-{run_id}-dlq"
        self.region = "eu-central-1"
        self.endpoint_url = ""
        self._proc: subprocess.Popen | None = None
        self._client = None
        self.queue_url = self.dlq_url = ""

    async def start(self) -> None:
        port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.to_thread(self._wait_ready)
        import boto3

        # moto accepts any credentials; boto3 (and the sidecar's collector) only need some to sign with.
        for key, value in (("AWS_ACCESS_KEY_ID", "demo"), ("AWS_SECRET_ACCESS_KEY", "demo")):
            os.environ.setdefault(key, value)
        self._client = boto3.client("sqs", endpoint_url=self.endpoint_url, region_name=self.region)
        await asyncio.to_thread(self._create_queues)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", int(self.endpoint_url.rsplit(":", 1)[1])), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start within 30s")

    def _create_queues(self) -> None:
        c = self._client
        self.dlq_url = c.create_queue(QueueName=self.dlq_name)["QueueUrl"]
        dlq_arn = c.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_attempts)})
        self.queue_url = c.create_queue(
            QueueName=self.queue_name, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "30"}
        )["QueueUrl"]

    async def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def collector_config(self) -> dict[str, Any]:
        return {
            "type": "sqs",
            "name": "demo-sqs",
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "queues": [self.queue_name, self.dlq_name],
        }

    # -- producer and consumer side ---------------------------------------------------------
    async def send(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self._client.send_message, QueueUrl=self.queue_url, MessageBody=json.dumps(body))

    async def receive(self, max_messages: int = 10) -> list[Delivery]:
        resp = await asyncio.to_thread(
            self._client.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Delivery(json.loads(m["Body"]), int(m["Attributes"]["ApproximateReceiveCount"]), m["ReceiptHandle"])
            for m in resp.get("Messages", [])
        ]

    async def ack(self, d: Delivery) -> None:
        await asyncio.to_thread(self._client.delete_message, QueueUrl=self.queue_url, ReceiptHandle=d.handle)

    async def retry_later(self, d: Delivery, delay: int, redeliver: Callable[[Delivery], None]) -> None:
        # The message comes back as a new receive after `delay` seconds, with its receive count + 1.
        await self._set_visibility(d, delay)

    async def dead_letter(self, d: Delivery) -> None:
        # Visible again at once: the next receive finds maxReceiveCount reached and redrives it to the DLQ.
        await self._set_visibility(d, 0)

    async def lose_ack(self, d: Delivery) -> None:
        # The delete never reached the queue (worker restarted): the message is delivered again.
        await self._set_visibility(d, 0)

    async def _set_visibility(self, d: Delivery, seconds: int) -> None:
        await asyncio.to_thread(
            self._client.change_message_visibility,
            QueueUrl=self.queue_url,
            ReceiptHandle=d.handle,
            VisibilityTimeout=seconds,
        )

    async def backlog(self) -> int:
        """Messages still in the main queue: visible, in flight or delayed."""
        attrs = (
            await asyncio.to_thread(
                self._client.get_queue_attributes,
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    async def dlq_depth(self) -> int:
        attrs = (
            await asyncio.to_thread(
                self._client.get_queue_attributes, QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"])

    async def dlq_records(self) -> list[dict[str, Any]]:
        """Read every dead-lettered message and leave it in the DLQ as it was."""
        return await asyncio.to_thread(self._dlq_records)

    def _dlq_records(self) -> list[dict[str, Any]]:
        bodies, handles = [], []
        while True:
            msgs = self._client.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=0
            ).get("Messages", [])
            if not msgs:
                break
            for m in msgs:
                bodies.append(json.loads(m["Body"]))
                handles.append(m["ReceiptHandle"])
        for i in range(0, len(handles), 10):
            self._client.change_message_visibility_batch(
                QueueUrl=self.dlq_url,
                Entries=[
                    {"Id": str(j), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for j, h in enumerate(handles[i : i + 10])
                ],
            )
        return bodies


class RabbitQueue:
    broker = "rabbitmq"

    def __init__(self, url: str, max_attempts: int, run_id: str | None = None):
        self.url = url
        self.max_attempts = max_attempts
        run_id = run_id or uuid.uuid4().hex[:8]
        self.queue_name = f"storefront-to-erp-{run_id}"
        self.dlq_name = f"storefront-to-erp-{run_id}-dlq"
        self.dlx_name = f"storefront-to-erp-{run_id}-dlx"
        parsed = urllib.parse.urlsplit(url)
        self.vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
        self.user = urllib.parse.unquote(parsed.username or "guest")
        self.password = urllib.parse.unquote(parsed.password or "guest")
        self.host = parsed.hostname or "127.0.0.1"
        self._conn = self._channel = self._queue = self._dlq = None
        self._consumer_tag = None
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._attempts: dict[str, int] = {}

    async def start(self) -> None:
        import aio_pika

        self._conn = await aio_pika.connect_robust(self.url)
        self._channel = await self._conn.channel()
        await self._channel.set_qos(prefetch_count=64)
        dlx = await self._channel.declare_exchange(self.dlx_name, aio_pika.ExchangeType.FANOUT, auto_delete=True)
        self._dlq = await self._channel.declare_queue(self.dlq_name, durable=False, auto_delete=False)
        await self._dlq.bind(dlx)
        self._queue = await self._channel.declare_queue(
            self.queue_name, durable=False, arguments={"x-dead-letter-exchange": self.dlx_name}
        )
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message) -> None:
        body = json.loads(message.body)
        # A redelivered message (its ack was lost) starts a new round of attempts, counted on.
        attempt = self._attempts.get(body["id"], 0) + 1
        self._attempts[body["id"]] = attempt
        await self._inbox.put(Delivery(body, attempt, message))

    async def stop(self, keep_queues: bool = False) -> None:
        if self._conn is None:
            return
        try:
            await self._queue.cancel(self._consumer_tag)
            if not keep_queues:  # the demo's queues are its own: leave the broker as it was
                for q in (self._queue, self._dlq):
                    await q.delete(if_unused=False, if_empty=False)
        finally:
            await self._conn.close()

    def collector_config(self) -> dict[str, Any]:
        mgmt = f"http://{self.host}:15672"
        return {
            "type": "rabbitmq",
            "name": "demo-rabbitmq",
            "url": mgmt,
            "username": self.user,
            "password": self.password,
            "vhosts": [self.vhost],
            "queues": [self.queue_name, self.dlq_name],
        }

    async def send(self, body: dict[str, Any]) -> None:
        import aio_pika

        await self._channel.default_exchange.publish(
            aio_pika.Message(json.dumps(body).encode()), routing_key=self.queue_name
        )

    async def receive(self, max_messages: int = 10) -> list[Delivery]:
        out: list[Delivery] = []
        try:
            out.append(await asyncio.wait_for(self._inbox.get(), 0.2))
        except TimeoutError:
            return out
        while len(out) < max_messages and not self._inbox.empty():
            out.append(self._inbox.get_nowait())
        return out

    async def ack(self, d: Delivery) -> None:
        await d.handle.ack()

    async def retry_later(self, d: Delivery, delay: int, redeliver: Callable[[Delivery], None]) -> None:
        # RabbitMQ has no visibility timeout: keep the message unacked and try again after the interval.
        async def later():
            await asyncio.sleep(delay)
            self._attempts[d.body["id"]] = d.attempt + 1
            redeliver(Delivery(d.body, d.attempt + 1, d.handle))

        asyncio.get_running_loop().create_task(later())

    async def dead_letter(self, d: Delivery) -> None:
        await d.handle.reject(requeue=False)  # routed by the dead-letter exchange into the DLQ

    async def lose_ack(self, d: Delivery) -> None:
        await d.handle.nack(requeue=True)

    async def backlog(self) -> int:
        declared = await self._channel.declare_queue(self.queue_name, passive=True)
        # Unacked messages (being worked on or waiting for a retry) are the worker's `busy` count.
        return declared.declaration_result.message_count + self._inbox.qsize()

    async def dlq_depth(self) -> int:
        declared = await self._channel.declare_queue(self.dlq_name, passive=True)
        return declared.declaration_result.message_count

    async def dlq_records(self) -> list[dict[str, Any]]:
        # Read and requeue: the messages stay in the DLQ for whoever looks next.
        bodies, held = [], []
        while True:
            msg = await self._dlq.get(no_ack=False, fail=False)
            if msg is None:
                break
            bodies.append(json.loads(msg.body))
            held.append(msg)
        for msg in held:
            await msg.nack(requeue=True)
        return bodies
