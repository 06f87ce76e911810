"""A local stand-in for the RabbitMQ management API that can answer the way a broken or hostile one
does: an absurd page_count, wrong types, invalid JSON, endless bodies. It runs on its own event loop
in a thread, so what it costs never shows up in the measured loop of the collector under test.

Normal answers follow RabbitMQ 3.10: `/api/queues[/{vhost}]` paged (`page`, `page_size`, sorted by
name), `/api/exchanges/{vhost}` and `/api/bindings/{vhost}` as plain lists.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web


def queue(name: str, vhost: str = "shop", ready: Any = 0, **extra: Any) -> dict[str, Any]:
    item = {
        "name": name,
        "vhost": vhost,
        "type": "classic",
        "messages_ready": ready,
        "messages_unacknowledged": 0,
        "consumers": 0,
        "head_message_timestamp": None,
        "arguments": {},
        "effective_policy_definition": {},
    }
    item.update(extra)
    return item


class Raw:
    """An answer given as is: bytes, or an async iterator of chunks (sent chunked, no Content-Length)."""

    def __init__(
        self,
        body: bytes | Callable[[], AsyncIterator[bytes]],
        status: int = 200,
        content_type: str = "application/json",
    ):
        self.body, self.status, self.content_type = body, status, content_type


class FakeManagementApi:
    def __init__(self) -> None:
        self.queues: list[dict[str, Any]] = []
        self.exchanges: dict[str, list[dict[str, Any]]] = {}
        self.bindings: dict[str, list[dict[str, Any]]] = {}
        self.page_count: int | None = None  # claim this page_count whatever the listing holds
        # path (without the query) -> Raw, or a function of the query returning a Raw or a JSON value
        self.answers: dict[str, Any] = {}
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def request_count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))

    # --- answers ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.rel_url.raw_path)
        self.requests.append(path)
        query = dict(request.query)
        answer = self.answers.get(path)
        if callable(answer):
            answer = answer(query)
        if answer is None:
            answer = self._default(path, query)
        if not isinstance(answer, Raw):
            answer = Raw(json.dumps(answer).encode())
        if callable(answer.body):
            resp = web.StreamResponse(status=answer.status, headers={"Content-Type": answer.content_type})
            await resp.prepare(request)
            try:
                async for chunk in answer.body():
                    await resp.write(chunk)
            except (ConnectionError, RuntimeError):
                pass  # the client gave up reading: that is the point of these answers
            return resp
        return web.Response(status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type})

    def _default(self, path: str, query: dict[str, str]) -> Any:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "queues"] and len(parts) <= 3:
            items = sorted(
                (q for q in self.queues if len(parts) == 2 or q.get("vhost") == parts[2]),
                key=lambda q: str(q.get("name")),
            )
            size = int(query.get("page_size", 100))
            page = int(query.get("page", 1))
            count = self.page_count if self.page_count is not None else -(-len(items) // size)
            return {
                "filtered_count": len(items),
                "item_count": len(items[(page - 1) * size : page * size]),
                "items": items[(page - 1) * size : page * size],
                "page": page,
                "page_count": count,
                "page_size": size,
                "total_count": len(items),
            }
        if parts[:2] == ["api", "exchanges"] and len(parts) == 3:
            return self.exchanges.get(parts[2], [{"name": "", "type": "direct"}])
        if parts[:2] == ["api", "bindings"] and len(parts) == 3:
            return self.bindings.get(parts[2], [])
        return Raw(b'{"error":"Object Not Found","reason":"Not Found"}', status=404)
