"""Retention: delete snapshots older than `snapshots.retention`, in batches.

Each batch is one job on the store's writer thread; intake writes queue between batches, so a
sweep of a million expired snapshots delays a write by one batch, never by the whole sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from syncwatch.snapshots.store import StoreError

log = logging.getLogger("syncwatch.snapshots")


class RetentionSweeper:
    """Runs `sweep` every `interval` and on demand, one sweep at a time."""

    def __init__(
        self,
        *,
        run: Callable[..., Awaitable[Any]],
        sweep_batch: Callable[[float, int], int],
        retention: float,
        interval: float,
        clock: Callable[[], float],
        after_sweep: Callable[[], Awaitable[None]],
        batch: int = 500,
        compact: Callable[[int], int] | None = None,
        compact_pages: int = 500,
        pause: float = 0.002,
    ) -> None:
        self._run = run  # runs a blocking function on the store's thread
        self._sweep_batch = sweep_batch
        self.retention = retention
        self.interval = interval
        self.clock = clock
        self.batch = batch
        self._after_sweep = after_sweep
        self._compact = compact
        self.compact_pages = compact_pages
        self.pause = pause
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="snapshot-retention-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping: its error was logged
                await self._task
            self._task = None

    async def sweep(self) -> int:
        """Delete everything received more than `retention` ago; returns how many."""
        async with self._lock:  # one sweep at a time (periodic and on-demand)
            cutoff = self.clock() - self.retention
            total = 0
            try:
                while True:
                    n = await self._run(self._sweep_batch, cutoff, self.batch)
                    total += n
                    if n < self.batch:
                        break
                    await asyncio.sleep(self.pause)  # let queued intake writes go first
                if total and self._compact is not None:
                    # Return the freed pages to the file system in small steps, after the deletes.
                    left = None
                    while True:
                        now_left = await self._run(self._compact, self.compact_pages)
                        if now_left == 0 or now_left == left:
                            break
                        left = now_left
                        await asyncio.sleep(self.pause)
            finally:
                await self._after_sweep()
            if total:
                log.info("retention: deleted %d snapshots received before %.0f", total, cutoff)
            return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("retention sweep failed (%s): %s", exc.reason, exc.message)
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval)
