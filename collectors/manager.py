"""Runs every configured collector on its own schedule inside the sidecar's event loop.

Each collector is an independent asyncio task with its own deadline, so a broker that is down,
slow or refusing never stops or delays the others, and the next cycle simply tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from syncwatch.collectors.base import Collector, CollectorError, Sample, check_sample
from syncwatch.collectors.config import SamplingSettings, load_collectors_section
from syncwatch.collectors.deadletters import DeadLetterBook, DeadLetterMetric
from syncwatch.collectors.metrics import CollectorMetrics
from syncwatch.collectors.sampling import AdaptiveSchedule

log = logging.getLogger("syncwatch.collectors")


class CollectorRunner:
    def __init__(
        self,
        collector: Collector,
        sampling: SamplingSettings,
        metrics: CollectorMetrics,
        clock: Callable[[], float],
        dead_letters: DeadLetterBook | None = None,
    ):
        self.collector = collector
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.clock = clock
        self.schedule = AdaptiveSchedule(sampling, clock)
        # The whole pass gets at most this long; each call inside it has settings.timeout.
        self.deadline = max(collector.settings.timeout, 0.9 * sampling.fast_interval)
        self.up = False
        self.last_sample: Sample | None = None
        self.last_error: CollectorError | None = None
        self.last_duration = 0.0
        self._last_partial: tuple[str, ...] = ()
        metrics.register_collector(collector.name, sampling.interval)

    @property
    def name(self) -> str:
        return self.collector.name

    async def run_once(self) -> Sample | None:
        name = self.name
        started = time.monotonic()
        error: CollectorError | None = None
        sample: Sample | None = None
        try:
            sample = await asyncio.wait_for(self.collector.sample(), self.deadline)
            try:
                check_sample(sample)
            except CollectorError:
                if isinstance(sample, Sample):
                    self.metrics.api_calls.labels(name).inc(sample.api_calls)
                sample = None
                raise
        except CollectorError as exc:
            error = exc
        except TimeoutError:
            error = CollectorError("timeout", f"sample did not finish within {self.deadline:g}s")
        except Exception as exc:  # a plug-in bug must not kill the loop; it is counted and logged
            log.exception("collector %s: unexpected error", name)
            error = CollectorError("other", f"{type(exc).__name__}: {exc}")
        duration = self.last_duration = time.monotonic() - started
        m = self.metrics
        m.sample_duration.labels(name).set(duration)
        if sample is not None:
            m.api_calls.labels(name).inc(sample.api_calls)
            for partial in sample.errors:
                m.errors.labels(name, partial.reason).inc()
            m.queues.update(name, self.collector.broker, sample)
            m.last_success.labels(name).set(self.clock())
            m.up.labels(name).set(1)
            self.schedule.observe(sample)
            if not self.up:
                log.info("collector %s: up (%d queues, %d DLQs)", name, len(sample.queues), len(sample.dlqs))
            self._log_partial(sample)
            if self.dead_letters is not None and sample.dead_letters is not None:
                await self._record_dead_letters(sample)
            self.up, self.last_sample, self.last_error = True, sample, None
        else:
            assert error is not None
            m.errors.labels(name, error.reason).inc()
            m.up.labels(name).set(0)
            if self.up or self.last_error is None or self.last_error.reason != error.reason:
                log.warning("collector %s: down: %s", name, error)
            self.up, self.last_error = False, error
        m.interval.labels(name).set(self.schedule.interval())
        return sample

    async def _record_dead_letters(self, sample: Sample) -> None:
        """Redact, link and store what was read (in a thread: redaction and SQLite are work)."""
        book = self.dead_letters
        assert book is not None and sample.dead_letters is not None
        try:
            await asyncio.to_thread(book.record, self.name, sample.dead_letters)
            await asyncio.to_thread(book.forget_queues, self.name, {(d.namespace, d.queue) for d in sample.dlqs})
        except Exception:  # the depths are still good; the book is retried next cycle
            log.exception("collector %s: storing dead letters failed", self.name)
            self.metrics.errors.labels(self.name, "other").inc()

    def _log_partial(self, sample: Sample) -> None:
        """Partial failures (a vanished queue, a refused oversized link table) are logged when they change,
        not on every cycle; messages name queues with repr(), so a broker's name cannot forge a log line."""
        partial = tuple(sorted({f"{e.reason}: {e.message}" for e in sample.errors}))
        if partial and partial != self._last_partial:
            shown = "; ".join(partial[:5]) + (f"; and {len(partial) - 5} more" if len(partial) > 5 else "")
            log.warning("collector %s: partial sample, %d error(s): %s", self.name, len(sample.errors), shown)
        self._last_partial = partial

    async def run_forever(self) -> None:
        while True:
            started = time.monotonic()
            await self.run_once()
            # Wake at least every fast_interval to re-check the interval in force, so a high-traffic
            # window that opens during a 60 s wait is honoured from its start, not up to a minute late.
            while True:
                interval = self.schedule.interval()
                self.metrics.interval.labels(self.name).set(interval)
                remaining = interval - (time.monotonic() - started)
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, self.schedule.settings.fast_interval))


class CollectorManager:
    def __init__(
        self,
        collectors: list[dict],
        sampling: dict,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        dead_letters: Callable[[], DeadLetterBook] | None = None,
    ):
        parsed, self.sampling = load_collectors_section(collectors, sampling)
        self.metrics = CollectorMetrics(registry)
        # The book of dead letters, made only when some collector reads them (`dead_letters.enabled`).
        reading = any(getattr(getattr(s, "dead_letters", None), "enabled", False) for _, s in parsed)
        self.dead_letters: DeadLetterBook | None = dead_letters() if reading and dead_letters is not None else None
        self._dead_letter_metric = None
        if self.dead_letters is not None:
            self._dead_letter_metric = DeadLetterMetric(self.dead_letters, registry)
        self.runners = [
            CollectorRunner(cls(settings), self.sampling, self.metrics, clock, self.dead_letters)
            for cls, settings in parsed
        ]
        self._tasks: list[asyncio.Task] = []

    def runner(self, name: str) -> CollectorRunner:
        return next(r for r in self.runners if r.name == name)

    async def sample_once(self) -> dict[str, Sample | None]:
        """One pass of every collector, concurrently (used by `collectors test` and tests)."""
        results = await asyncio.gather(*(r.run_once() for r in self.runners))
        return {r.name: s for r, s in zip(self.runners, results, strict=False)}

    async def start(self) -> None:
        for r in self.runners:
            self._tasks.append(asyncio.create_task(r.run_forever(), name=f"collector:{r.name}"))

    async def pause(self) -> None:
        """Stop sampling (this replica no longer leads) and drop the gauges; resume() starts again."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.forget_gauges()
        for r in self.runners:
            r.up, r.last_sample = False, None

    def forget_gauges(self) -> None:
        """No collector gauge and no dead-letter count on a replica that does not lead."""
        self.metrics.forget_gauges()
        if self._dead_letter_metric is not None:
            self._dead_letter_metric.exported = False

    async def resume(self) -> None:
        for r in self.runners:
            self.metrics.register_collector(r.name, self.sampling.interval)
        if self._dead_letter_metric is not None:
            self._dead_letter_metric.exported = True
        await self.start()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for r in self.runners:
            try:
                await r.collector.close()
            except Exception:  # closing is best effort at shutdown
                log.debug("collector %s: close failed", r.name, exc_info=True)

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "up": r.up,
                "interval": r.schedule.interval(),
                "error": str(r.last_error) if r.last_error else None,
            }
            for r in self.runners
        ]
