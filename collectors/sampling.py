"""Adaptive sampling: `interval` (60 s) normally, `fast_interval` (10 s) inside high-traffic windows,
while a queue's depth grows or a DLQ holds messages, and until `calm_period` (5 min) has passed
without any of those."""

from __future__ import annotations

from collections.abc import Callable

from syncwatch.collectors.base import Sample
from syncwatch.collectors.config import SamplingSettings


class AdaptiveSchedule:
    """One per collector: each broker's own traffic decides its pace (and its API bill)."""

    def __init__(self, settings: SamplingSettings, clock: Callable[[], float]):
        self.settings = settings
        self.clock = clock
        self._last_trigger: float | None = None
        self._depths: dict[tuple[str, str], float] = {}
        self.reasons: list[str] = []  # why the last observed sample asked for fast mode

    def observe(self, sample: Sample) -> list[str]:
        """Feed one successful sample; returns the fast-mode triggers it showed."""
        s = self.settings
        reasons: list[str] = []
        depths = {(q.namespace, q.queue): q.messages for q in sample.queues}
        if s.fast_when_depth_growing:
            grown = sorted(queue for (ns, queue), d in depths.items() if d > self._depths.get((ns, queue), d))
            if grown:
                reasons.append("depth growing: " + ", ".join(grown[:5]) + (" …" if len(grown) > 5 else ""))
        if s.fast_when_dlq_not_empty:
            full = sorted(d.queue for d in sample.dlqs if d.messages > 0)
            if full:
                reasons.append("DLQ not empty: " + ", ".join(full[:5]) + (" …" if len(full) > 5 else ""))
        self._depths = depths
        if reasons:
            self._last_trigger = self.clock()
        self.reasons = reasons
        return reasons

    def in_window(self, now: float) -> str | None:
        for i, w in enumerate(self.settings.high_traffic_windows):
            if w.contains(now):
                return w.name or f"high_traffic_windows[{i}]"
        return None

    def interval(self) -> float:
        now = self.clock()
        if self.in_window(now) is not None:
            return self.settings.fast_interval
        if self._last_trigger is not None and now - self._last_trigger < self.settings.calm_period:
            return self.settings.fast_interval
        return self.settings.interval
