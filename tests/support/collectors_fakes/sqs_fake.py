"""A local SQS endpoint speaking the JSON protocol botocore uses (`X-Amz-Target: AmazonSQS.<Op>`), whose
answers a test can bend the way a broken SQS-compatible server might: strings where counts belong,
listings that never end, oversized bodies. It runs on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

ACCOUNT, REGION = "123456789012", "us-east-1"


def attributes(name: str, visible: Any = "0", hidden: Any = "0", delayed: Any = "0", **extra: Any) -> dict[str, Any]:
    attrs = {
        "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "ApproximateNumberOfMessages": visible,
        "ApproximateNumberOfMessagesNotVisible": hidden,
        "ApproximateNumberOfMessagesDelayed": delayed,
    }
    attrs.update(extra)
    return {k: v for k, v in attrs.items() if v is not None}


class FakeSqs:
    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {}  # name -> Attributes as answered
        # operation -> function(request JSON) returning the answer (a JSON value, or bytes sent as is)
        self.answers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def queue_url(self, name: str) -> str:
        return f"{self.url}/{ACCOUNT}/{name}"

    async def _start(self) -> int:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, request: web.Request) -> web.Response:
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.requests.append(op)
        body = json.loads(await request.read() or b"{}")
        answer = self.answers[op](body) if op in self.answers else self._default(op, body)
        if isinstance(answer, web.Response):
            return answer
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return web.Response(body=data, headers={"Content-Type": "application/x-amz-json-1.0"})

    def _default(self, op: str, body: dict[str, Any]) -> Any:
        if op == "ListQueues":
            prefix = body.get("QueueNamePrefix", "")
            return {"QueueUrls": [self.queue_url(n) for n in sorted(self.queues) if n.startswith(prefix)]}
        if op == "GetQueueUrl":
            if body["QueueName"] not in self.queues:
                return web.Response(
                    status=400,
                    headers={"Content-Type": "application/x-amz-json-1.0"},
                    body=json.dumps(
                        {
                            "__type": "com.amazonaws.sqs#QueueDoesNotExist",
                            "message": "The specified queue does not exist.",
                        }
                    ).encode(),
                )
            return {"QueueUrl": self.queue_url(body["QueueName"])}
        if op == "GetQueueAttributes":
            return {"Attributes": self.queues[body["QueueUrl"].rsplit("/", 1)[1]]}
        if op == "ListDeadLetterSourceQueues":
            return {"queueUrls": []}
        return web.Response(status=400, text="unknown operation")
