"""What SnapshotIntake calls once per stored batch, on its store thread: reads the redacted
request/response bodies of audited flows, feeds the write tracker and the idempotency maps,
counts findings and keeps them (with both writes, redacted) in audit.db."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry

from syncwatch.audit.findings import MAX_TEXT, PayloadAudit, fill_previous
from syncwatch.audit.metrics import AuditMetrics
from syncwatch.audit.ownership import FlowMap, ValueHasher
from syncwatch.audit.store import AuditStore, Counts, db_path
from syncwatch.audit.tracker import LatestByKey, WriteTracker
from syncwatch.config.audit import AuditConfig
from syncwatch.snapshots.otlp_logs import PayloadRecord
from syncwatch.snapshots.store import Snapshot

log = logging.getLogger("syncwatch.audit")

OTHER = "other"
FLUSH_EVERY = 2.0  # seconds between write-count flushes when no finding forces one
MAX_QUEUED = 20_000  # payloads handed to the audit thread and not yet audited


class Auditor:
    def __init__(
        self,
        cfg: AuditConfig,
        systems: Iterable[str],
        registry: CollectorRegistry,
        hash_key: bytes,
        data_dir: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.maps = {name: FlowMap(name, f, cfg.max_unmapped_fields) for name, f in cfg.flows.items()}
        known = set(systems)
        for m in self.maps.values():
            known |= m.systems
        self.systems = frozenset(known)
        self.hash = ValueHasher(hash_key)
        self.tracker = WriteTracker(cfg.max_tracked_fields)
        self.keys = LatestByKey(cfg.max_tracked_fields)
        self.record_ids = LatestByKey(cfg.max_tracked_fields)
        self.m = AuditMetrics(registry)
        self.payloads = PayloadAudit(self.hash, self.tracker, self.keys, self.record_ids, self.m)
        self.store = AuditStore(db_path(data_dir), cfg.max_events)
        self.clock = clock
        self._counts: Counts = {}
        self._last_flush = clock()
        self._evicted = 0
        # One audit thread owns the tracker and audit.db; the store thread only hands batches over.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._lock = threading.Lock()
        self._queued = 0

    def _writer_label(self, writer: str) -> str:
        return writer if writer in self.systems else OTHER

    # -- intake --------------------------------------------------------------------------------
    def submit(self, stored: list[tuple[Snapshot, PayloadRecord]], lookup: Callable[[str], list[Snapshot]]) -> None:
        """Called on the snapshot store thread: hands the batch to the audit thread and returns at
        once, so audits never slow the intake; beyond MAX_QUEUED payloads waiting, a batch is
        skipped (counted as `busy`)."""
        n = sum(1 for s, _ in stored if s.flow in self.maps)
        if not n:
            return
        with self._lock:
            if self._queued + n > MAX_QUEUED:
                self.m.skipped.labels("busy").inc(n)
                return
            self._queued += n
        self._executor.submit(self._observe_queued, stored, lookup, n)

    def submit_record_ids(self, items: list[tuple[str, str, str | None, str, float]]) -> None:
        """Destination record IDs of committed confirm spans (flow, correlation ID, destination,
        record ID, time), from the span writer's thread; audited on the audit thread."""
        mine = [i for i in items if i[0] in self.maps]
        if not mine:
            return
        with self._lock:
            if self._queued + len(mine) > MAX_QUEUED:
                self.m.skipped.labels("busy").inc(len(mine))
                return
            self._queued += len(mine)

        def run() -> None:
            try:
                events: list[dict[str, Any]] = []
                for flow, corr, destination, record_id, t in mine:
                    self.payloads.record_id_found(flow, corr, destination, record_id[:MAX_TEXT], t, events)
                if events:
                    self._flush(events)
            finally:
                with self._lock:
                    self._queued -= len(mine)

        self._executor.submit(run)

    def _observe_queued(
        self, stored: list[tuple[Snapshot, PayloadRecord]], lookup: Callable[[str], list[Snapshot]], n: int
    ) -> None:
        try:
            self.observe(stored, lookup)
        finally:
            with self._lock:
                self._queued -= n

    def wait(self) -> None:
        """Block until every batch handed over so far is audited."""
        self._executor.submit(lambda: None).result()

    def observe(self, stored: list[tuple[Snapshot, PayloadRecord]], lookup: Callable[[str], list[Snapshot]]) -> None:
        """Runs on the audit thread (tests may call it directly)."""
        events: list[dict[str, Any]] = []
        counts: dict[tuple[int, str, str, str, str], list[int]] = {}  # (day, flow, field, writer, label)
        for snap, rec in stored:
            fmap = self.maps.get(snap.flow or "")
            if fmap is None:
                continue
            try:
                self.payloads.one(fmap, snap, rec, events, counts)
            except Exception:  # one payload never stops the batch (or the store)
                log.exception("audit of one payload failed (flow %s)", fmap.name)
                self.m.skipped.labels("error").inc()
        labels: dict[tuple[str, str, str], list[int]] = {}
        for (day, flow, field, writer, label), n in counts.items():
            total = self._counts.setdefault((day, flow, field, writer), [0, 0, 0])
            lab = labels.setdefault((flow, label, self._writer_label(writer)), [0, 0, 0])
            for i in range(3):
                total[i] += n[i]
                lab[i] += n[i]
        for (flow, field, writer), (w, c, v) in labels.items():
            self.m.writes.labels(flow, field, writer).inc(w)
            if c:
                self.m.conflicts.labels(flow, field, writer).inc(c)
            if v:
                self.m.violations.labels(flow, field, writer).inc(v)
        fill_previous(events, lookup, self.maps)
        self.m.tracked.set(self.tracker.fields)
        evicted = self.tracker.evicted + self.keys.evicted + self.record_ids.evicted
        if evicted > self._evicted:
            self.m.evicted.inc(evicted - self._evicted)
            self._evicted = evicted
        if events or self.clock() - self._last_flush >= FLUSH_EVERY:
            self._flush(events)

    def flush(self) -> None:
        """Write the counts held in memory now (before a report is read)."""
        self._executor.submit(self._flush).result()

    def _flush(self, events: list[dict[str, Any]] | None = None) -> None:
        counts, self._counts = self._counts, {}
        self._last_flush = self.clock()
        if events or counts:
            self.store.write(events or [], counts)

    # -- retention -----------------------------------------------------------------------------
    def sweep(self, cutoff: float) -> None:
        self._executor.submit(self._sweep, cutoff).result()

    def _sweep(self, cutoff: float) -> None:
        self.tracker.sweep(cutoff)
        self.keys.sweep(cutoff)
        self.record_ids.sweep(cutoff)
        self.m.tracked.set(self.tracker.fields)
        self._flush()
        self.store.sweep(cutoff, self.clock() - self.cfg.report_retention)

    def close(self) -> None:
        def last() -> None:
            self._flush()
            self.store.close()

        self._executor.submit(last).result()
        self._executor.shutdown(wait=True)
