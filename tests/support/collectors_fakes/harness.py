"""Helpers shared by the collector tests: one event loop per test, exact metric reads, free ports."""

from __future__ import annotations

import asyncio
import time

import pytest
from moto_launcher import MotoServer  # noqa: F401  (re-exported for the collector tests)
from ports import free_port  # noqa: F401  (re-exported)
from prometheus_client import CollectorRegistry

from syncwatch.collectors.manager import CollectorManager


@pytest.fixture
def run():
    """Runs coroutines on one event loop for the whole test, like the sidecar's loop; stops managers."""
    loop = asyncio.new_event_loop()
    managers: list[CollectorManager] = []

    def run_(coro):
        return loop.run_until_complete(coro)

    run_.managers = managers
    yield run_
    for m in managers:
        loop.run_until_complete(m.stop())
    loop.close()


def value(reg: CollectorRegistry, name: str, **labels) -> float | None:
    return reg.get_sample_value(name, labels)


def sample_until(run, manager: CollectorManager, ready, timeout: float = 30.0):
    """Sample until `ready()` holds (brokers publish some counts with a delay) or the timeout passes."""
    if manager not in run.managers:
        run.managers.append(manager)
    deadline = time.monotonic() + timeout
    while True:
        result = run(manager.sample_once())
        if ready() or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


class LoopWatch:
    """`async with LoopWatch() as w:` ticks every 10 ms on the running loop; `w.worst` is the longest the
    loop kept a tick waiting beyond that, i.e. how long anything else (a /healthz request) would have."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._last = 0.0
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.worst = max(self.worst, now - self._last - 0.01)
            self._last = now

    async def __aenter__(self) -> LoopWatch:
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.worst = max(self.worst, time.monotonic() - self._last - 0.01)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
