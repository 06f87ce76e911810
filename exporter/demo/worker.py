"""The middleware between queue and ERP, with the habits that make integrations fail silently:
fixed-interval retries without jitter, giving up into the DLQ after a few attempts, sometimes
dropping an order after a timeout without recording it, and sometimes applying an inventory
adjustment twice (its delete is lost, so the queue delivers it again)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import aiohttp
from syncwatch_instrument import SyncInstrument

from syncwatch.demo.queues import Delivery
from syncwatch.demo.scenario import DemoSettings, FaultPlan

log = logging.getLogger("syncwatch.demo")


class Worker:
    def __init__(self, settings: DemoSettings, queue, erp_url: str, plan: FaultPlan, sw: SyncInstrument):
        self.settings = settings
        self.queue = queue
        self.erp_url = erp_url
        self.plan = plan
        self.sw = sw
        self.busy = 0  # deliveries being worked on, including ones held for a retry (RabbitMQ)
        self.outcomes: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()  # per flow: each attempt sends one request payload
        # Bookkeeping only: the ground truth is measured at the ERP and in the DLQ.
        self.dropped: set[str] = set()
        self.redelivered: set[str] = set()
        self.errors = 0
        self._local: asyncio.Queue[Delivery] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.workers)
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None
        self._holds_retries = getattr(queue, "broker", "") == "rabbitmq"

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.client_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as self._session:
            while not stop.is_set():
                await self._slots.acquire()
                delivery = await self._next()
                if delivery is None:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._handle(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _next(self) -> Delivery | None:
        if not self._local.empty():
            return self._local.get_nowait()
        got = await self.queue.receive(1)
        if not got:
            await asyncio.sleep(0.05)
            return None
        self.busy += 1
        return got[0]

    def _redeliver(self, d: Delivery) -> None:
        self._local.put_nowait(d)

    async def _handle(self, d: Delivery) -> None:
        try:
            await self._attempt(d)
        except Exception:
            # A bug in the simulator, not a simulated fault: say so instead of hanging the drain.
            log.exception("worker failed on %s", d.body.get("id"))
            self.errors += 1
        finally:
            self._slots.release()

    async def _attempt(self, d: Delivery) -> None:
        flow, record_id, payload = d.body["flow"], d.body["id"], d.body["payload"]
        s = self.settings
        status = None
        self.attempts[flow] += 1
        with self.sw.attempt(record_id, flow=flow, resend_count=d.attempt - 1) as attempt:
            attempt.snapshot_request(payload)
            try:
                async with self._session.post(f"{self.erp_url}/api/{flow}", json=payload) as resp:
                    text = await resp.text()
                    status = resp.status
                attempt.response(status)
                attempt.snapshot_response(text)
            except TimeoutError:
                attempt.error("timeout")
            except aiohttp.ClientError as exc:
                attempt.error(type(exc).__name__)
        if status == 200:
            self.sw.confirm(record_id, flow=flow, idempotency_key=record_id)
            # The copy keeps the receive count, so only lose the delete while it has retries left.
            if (
                flow == "inventory"
                and len(self.redelivered) < self.plan.duplicates
                and record_id not in self.redelivered
                and d.attempt <= s.max_attempts - 2
            ):
                self.redelivered.add(record_id)
                self.outcomes["ack_lost"] += 1
                await self._settle(self.queue.lose_ack(d))
                return
            self.outcomes["confirmed"] += 1
            await self._settle(self.queue.ack(d))
        elif status is None and flow == "orders" and record_id in self.plan.lose:
            # The bug: after a timeout the order is deleted from the queue and nothing records it.
            self.dropped.add(record_id)
            self.outcomes["dropped"] += 1
            await self._settle(self.queue.ack(d))
        elif d.attempt >= s.max_attempts:
            self.sw.fail(record_id, flow=flow, error_type="retries_exhausted")
            self.outcomes["dead_lettered"] += 1
            await self._settle(self.queue.dead_letter(d))
        else:
            self.outcomes["retry"] += 1
            await self.queue.retry_later(d, s.retry_interval, self._redeliver)
            if not self._holds_retries:
                self.busy -= 1

    async def _settle(self, op) -> None:
        try:
            await op
        finally:
            self.busy -= 1
