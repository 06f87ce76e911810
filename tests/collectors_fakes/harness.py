"""Helpers shared by the collector tests: one event loop per test, exact metric reads, free ports."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's standalone server on a free loopback port: boto3 talks HTTP to it as to AWS."""

    def __init__(self, env: dict | None = None):
        import os

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
