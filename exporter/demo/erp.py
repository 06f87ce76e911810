"""A simulated ERP HTTP API (aiohttp): rate-limits with 429 above a set rate, sometimes hangs
(the client times out), and applies every request it accepts: no idempotency, like many ERPs.

What it applied is the ground truth for lost orders and duplicate applies; every applied request
is also a row in its own database (`documents`), which syncwatch's reconciler reads."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from aiohttp import web

from syncwatch.demo.databases import ErpDb
from syncwatch.demo.scenario import DemoSettings, FaultPlan


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.updated = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FakeErp:
    def __init__(self, settings: DemoSettings, plan: FaultPlan, db: ErpDb | None = None):
        self.settings = settings
        self.db = db
        self.plan = plan
        self.bucket = TokenBucket(settings.erp_rate_limit, settings.erp_burst)
        self.rng = random.Random(settings.seed + 1)
        self.applies: Counter[str] = Counter()  # record ID -> times applied
        self.applied_flow: dict[str, str] = {}
        self.seen: set[str] = set()
        self.responses: Counter[int] = Counter()
        self.hangs = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        for flow in ("orders", "inventory", "customers"):
            app.router.add_post(f"/api/{flow}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        flow = request.path.rsplit("/", 1)[1]
        body = await request.json()
        record_id = body["id"]
        first_time = record_id not in self.seen
        self.seen.add(record_id)
        # Planned hang: the first attempt of an order the worker will lose; others hang at random.
        if (first_time and record_id in self.plan.lose) or (
            record_id not in self.plan.lose and self.rng.random() < self.settings.erp_random_hang_ratio
        ):
            self.hangs += 1
            await asyncio.sleep(self.settings.erp_hang_seconds)
            return self._answer(504, {"error": "gateway timeout"})
        if not self.bucket.take():
            return self._answer(429, {"error": "rate limit exceeded"}, headers={"Retry-After": "1"})
        if record_id in self.plan.poison:
            return self._answer(503, {"error": "posting period locked for this sales organisation"})
        self.applies[record_id] += 1
        self.applied_flow[record_id] = flow
        prefix = {"orders": "SO", "inventory": "MM", "customers": "BP"}[flow]
        document = f"{prefix}-{4500000 + sum(self.applies.values())}"
        if self.db is not None:
            self.db.add_document(document, record_id, flow, time.time())
        return self._answer(200, {"status": "applied", "document": document, "id": record_id})

    def _answer(self, status: int, payload: dict, headers: dict | None = None) -> web.Response:
        self.responses[status] += 1
        return web.json_response(payload, status=status, headers=headers)
