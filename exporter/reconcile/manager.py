"""Runs every configured reconciler on its own schedule inside the sidecar's event loop, compares
what the source and destination databases hold, cross-checks the ledger, and keeps the findings.

Each run reads one window per flow: from where the last run ended, less the flow's deadline (the
overlap, so an order too young to judge last time is judged now), to now. A failed run keeps the
window where it was, so the next one covers the gap. Open findings older than the window are looked
up again every run, in keyset batches: missing and duplicated ones at the destination (and in the
ledger), never-traced ones in the ledger, so an order that arrives late, or a span an exporter
delivered an hour late, resolves its finding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from syncwatch.config.models import FlowConfig
from syncwatch.ledger.reader import LedgerReader, LedgerUnavailable
from syncwatch.reconcile.base import KINDS, DestinationRow, ReconcileError, Reconciler, SourceRow
from syncwatch.reconcile.config import load_reconcilers_section
from syncwatch.reconcile.metrics import ReconcileMetrics
from syncwatch.reconcile.store import Finding, FindingStore

log = logging.getLogger("syncwatch.reconcile")
HOUR = 3600.0


@dataclass
class FlowResult:
    """What one run saw of one flow (printed by `syncwatch reconcile test`)."""

    source_rows: int = 0
    destination_rows: int = 0
    pending: int = 0
    new_source_ids: int = 0
    rechecked: int = 0  # open findings from before the window, looked up again
    resolved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    found: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    window: tuple[float, float] = (0.0, 0.0)


def _judge(
    page: list[SourceRow],
    dest: list[DestinationRow],
    ledger: Mapping[str, str],
    template: str,
    judge_before: float,
    deadline: float,
    result: FlowResult,
) -> tuple[list[Finding], list[tuple[str, str]]]:
    """Findings and cleared (kind, ID) pairs for one page of source rows."""
    by_id: dict[str, list[DestinationRow]] = {}
    for d in dest:
        by_id.setdefault(d.id, []).append(d)
    found: list[Finding] = []
    cleared: list[tuple[str, str]] = []
    for row in page:
        records = by_id.get(row.id, [])
        old_enough = row.changed_at <= judge_before
        corr = template.replace("{id}", row.id)
        state = ledger.get(corr)
        if not records:
            if old_enough:
                found.append(Finding("missing", row.id, row.changed_at, {"ledger_state": state}))
            else:
                result.pending += 1
        else:
            cleared.append(("missing", row.id))
            ids = sorted({r.record_id for r in records})
            if len(ids) > 1:
                found.append(
                    Finding("duplicated", row.id, row.changed_at, {"record_ids": ids[:20], "ledger_state": state})
                )
            else:
                cleared.append(("duplicated", row.id))
            arrivals = [r.arrived_at for r in records if r.arrived_at is not None]
            if arrivals:
                lag = min(arrivals) - row.changed_at
                if lag > deadline:
                    found.append(
                        Finding(
                            "late",
                            row.id,
                            row.changed_at,
                            {"arrived_at": min(arrivals), "lag_seconds": round(lag, 3), "ledger_state": state},
                        )
                    )
        if old_enough:
            if state is None:
                found.append(Finding("never_traced", row.id, row.changed_at, {}))
            else:
                cleared.append(("never_traced", row.id))
    for f in found:
        result.found[f.kind] += 1
        if len(result.examples[f.kind]) < 5:
            result.examples[f.kind].append(f.source_id)
    return found, cleared


class ReconcilerRunner:
    def __init__(
        self,
        reconciler: Reconciler,
        flows: Mapping[str, FlowConfig],
        store: FindingStore,
        ledger: LedgerReader,
        metrics: ReconcileMetrics,
        clock: Callable[[], float],
    ):
        self.reconciler = reconciler
        self.flows = flows
        self.store = store
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.up = False
        self.last_error: ReconcileError | None = None
        self.last_duration = 0.0
        self.last_results: dict[str, FlowResult] = {}
        metrics.register(self.name, reconciler.flows())
        self.update_expected()

    @property
    def name(self) -> str:
        return self.reconciler.name

    def update_expected(self) -> None:
        now = self.clock()
        for flow in self.reconciler.flows():
            rates = [r.min_per_hour for r in self.reconciler.settings.expected if r.flow == flow and r.contains(now)]
            self.metrics.expected_per_hour.labels(self.name, flow).set(max(rates, default=0))

    async def run_once(self, *, dry_run: bool = False) -> bool:
        """One run over every flow. `dry_run` (reconcile test) reads and judges but stores nothing."""
        started = time.monotonic()
        error: ReconcileError | None = None
        results: dict[str, FlowResult] = {}
        try:
            await self.reconciler.open()
            for flow in self.reconciler.flows():
                results[flow] = await self._flow(flow, dry_run)
        except ReconcileError as exc:
            error = exc
        except Exception as exc:  # a plug-in bug must not kill the loop; counted and logged
            log.exception("reconciler %s: unexpected error", self.name)
            error = ReconcileError("other", f"{type(exc).__name__}")
        finally:
            try:
                await self.reconciler.close()
            except Exception:
                log.debug("reconciler %s: close failed", self.name, exc_info=True)
        self.last_duration = time.monotonic() - started
        m = self.metrics
        m.duration.labels(self.name).set(self.last_duration)
        self.last_results = results
        if error is None:
            m.up.labels(self.name).set(1)
            m.last_success.labels(self.name).set(self.clock())
            if not self.up:
                log.info("reconciler %s: up", self.name)
            self.up, self.last_error = True, None
            return True
        m.errors.labels(self.name, error.reason).inc()
        m.up.labels(self.name).set(0)
        if self.up or self.last_error is None or self.last_error.reason != error.reason:
            log.warning("reconciler %s: down: %s", self.name, error)
        self.up, self.last_error = False, error
        return False

    async def _flow(self, flow: str, dry_run: bool) -> FlowResult:
        settings = self.reconciler.settings
        deadline = self.flows[flow].deadline
        now = self.clock()
        prev_end = await asyncio.to_thread(self.store.window_end, self.name, flow)
        start = now - settings.lookback if prev_end is None else min(prev_end, now) - deadline
        judge_before = now - deadline
        template = settings.correlation_template(flow)
        result = FlowResult(window=(start, now))
        m = self.metrics
        new_total: dict[str, int] = dict.fromkeys(KINDS, 0)

        async def check(page: list[SourceRow], recheck: bool = False) -> None:
            dest = await self.reconciler.destination_lookup(flow, [r.id for r in page])
            corrs = [template.replace("{id}", r.id) for r in page if r.changed_at <= judge_before]
            try:
                ledger = await asyncio.to_thread(self.ledger.states_of, flow, corrs)
            except LedgerUnavailable as exc:  # the never-traced check cannot be made: the run fails, counted
                raise ReconcileError("unreachable", str(exc)) from None
            if recheck:
                result.rechecked += len(page)
            else:
                result.source_rows += len(page)
            result.destination_rows += len(dest)
            m.rows.labels(self.name, flow, "destination").inc(len(dest))
            found, cleared = await asyncio.to_thread(
                _judge, page, dest, ledger, template, judge_before, deadline, result
            )
            if dry_run:
                return
            await store(found, cleared)

        async def store(found: list[Finding], cleared: list[tuple[str, str]]) -> None:
            new, dropped, resolved = await asyncio.to_thread(
                self.store.apply, self.name, flow, now, found, cleared, settings.max_findings
            )
            for kind in KINDS:
                new_total[kind] += new[kind]
                result.resolved[kind] += resolved[kind]
                if dropped[kind]:
                    m.dropped.labels(self.name, flow, kind).inc(dropped[kind])

        async for page in self.reconciler.source_pages(flow, start, now):
            m.rows.labels(self.name, flow, "source").inc(len(page))
            fresh = sum(1 for r in page if prev_end is None or r.changed_at >= prev_end)
            result.new_source_ids += fresh
            await check(page)
        # Open missing/duplicated findings older than the window: looked up again, so an order that
        # finally arrived (or a duplicate cleaned up) is resolved, not open for ever.
        after = 0
        while not dry_run:
            rows = await asyncio.to_thread(
                self.store.open_before,
                self.name,
                flow,
                ("missing", "duplicated"),
                start,
                after,
                settings_batch(settings),
            )
            if not rows:
                break
            after = rows[-1][0]
            await check([SourceRow(source_id, changed) for _, source_id, changed in rows], recheck=True)
        # Open never-traced findings older than the window: the ledger only (the destination has
        # nothing to say about them). Those cleared above are no longer open.
        key: tuple[float, int] = (float("-inf"), 0)
        while not dry_run:
            rows = await asyncio.to_thread(
                self.store.open_page, self.name, flow, "never_traced", start, key, settings_batch(settings)
            )
            if not rows:
                break
            key = (rows[-1][2], rows[-1][0])
            by_corr = {template.replace("{id}", source_id): source_id for _, source_id, _ in rows}
            try:
                states = await asyncio.to_thread(self.ledger.states_of, flow, list(by_corr))
            except LedgerUnavailable as exc:  # as in check(): the run fails, counted
                raise ReconcileError("unreachable", str(exc)) from None
            result.rechecked += len(rows)
            if states:
                await store([], [("never_traced", by_corr[corr]) for corr in states])
        if not dry_run:
            await asyncio.to_thread(self.store.set_window_end, self.name, flow, now)
            counts = await asyncio.to_thread(self.store.open_counts, self.name, flow)
            if prev_end is not None:
                m.source_ids.labels(self.name, flow).inc(result.new_source_ids)
            for kind in KINDS:
                m.findings.labels(self.name, flow, kind).set(counts[kind])
                m.found.labels(self.name, flow, kind).inc(new_total[kind])
                m.resolved.labels(self.name, flow, kind).inc(result.resolved[kind])
            m.pending.labels(self.name, flow).set(result.pending)
            m.window_end.labels(self.name, flow).set(now)
        return result

    async def run_forever(self) -> None:
        interval = self.reconciler.settings.interval
        while True:
            started = time.monotonic()
            self.update_expected()
            await self.run_once()
            if self.up:
                await asyncio.to_thread(self.store.sweep, self.clock() - self.reconciler.settings.retention)
            while (remaining := interval - (time.monotonic() - started)) > 0:
                await asyncio.sleep(min(remaining, 60.0))
                self.update_expected()


def settings_batch(settings: Any) -> int:
    return int(getattr(settings, "batch_size", 1000))


class ReconcileManager:
    def __init__(
        self,
        reconcilers: list[dict[str, Any]],
        flows: Mapping[str, FlowConfig],
        data_dir: Path,
        ledger: LedgerReader,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ):
        parsed = load_reconcilers_section(reconcilers, flows)
        self.metrics = ReconcileMetrics(registry)
        from syncwatch.reconcile.store import store_path

        self.store = FindingStore(store_path(data_dir))
        self.runners = [
            ReconcilerRunner(cls(settings), flows, self.store, ledger, self.metrics, clock) for cls, settings in parsed
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def run_once(self, *, dry_run: bool = False) -> dict[str, bool]:
        results = await asyncio.gather(*(r.run_once(dry_run=dry_run) for r in self.runners))
        return {r.name: ok for r, ok in zip(self.runners, results, strict=True)}

    async def start(self) -> None:
        for r in self.runners:
            self._tasks.append(asyncio.create_task(r.run_forever(), name=f"reconciler:{r.name}"))

    async def pause(self) -> None:
        """Stop reconciling (this replica no longer leads) and drop the gauges; resume() starts again."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.metrics.forget_gauges()
        for r in self.runners:
            r.up = False

    async def resume(self) -> None:
        for r in self.runners:
            self.metrics.register(r.name, r.reconciler.flows())
            r.update_expected()
        await self.start()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for r in self.runners:
            try:
                await r.reconciler.close()
            except Exception:
                log.debug("reconciler %s: close failed", r.name, exc_info=True)
        self.store.close()

    def status(self) -> list[dict[str, Any]]:
        return [
            {"name": r.name, "up": r.up, "error": str(r.last_error) if r.last_error else None} for r in self.runners
        ]
