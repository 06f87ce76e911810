"""What SnapshotIntake calls once per stored batch, on its store thread: reads the redacted
request/response bodies of audited flows, feeds the write tracker and the idempotency maps,
counts findings and keeps them (with both writes, redacted) in audit.db.

Each audited batch is one audit.db transaction: its findings, its write counts and the tracked
records it changed. The metrics move after that commit, so a write counted in
`syncwatch_audit_writes_total` is on disk and a restart (even kill -9) still compares later
writes against it. The OTLP answer does not wait for the audit: what is lost to a kill -9 is the
tracked state of payloads stored but still queued for the audit thread (at most MAX_QUEUED)."""

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
MAX_QUEUED = 20_000  # payloads handed to the audit thread and not yet audited


class Auditor:
    def __init__(
        self,
        cfg: AuditConfig,
        systems: Iterable[str],
        registry: CollectorRegistry,
        data_dir: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.maps = {name: FlowMap(name, f, cfg.max_unmapped_fields) for name, f in cfg.flows.items()}
        known = set(systems)
        for m in self.maps.values():
            known |= m.systems
        self.systems = frozenset(known)
        self.hash = ValueHasher()
        self.tracker = WriteTracker(cfg.max_tracked_fields)
        self.keys = LatestByKey(cfg.max_tracked_fields)
        self.record_ids = LatestByKey(cfg.max_tracked_fields)
        self.m = AuditMetrics(registry)
        self.payloads = PayloadAudit(self.hash, self.tracker, self.keys, self.record_ids, self.m)
        self._latest = {"keys": self.keys, "record_ids": self.record_ids}  # their names in audit.db
        self.store = AuditStore(db_path(data_dir), cfg.max_events)
        self.clock = clock
        self._counts: Counts = {}
        self._unwritten: list[dict[str, Any]] = []  # findings of batches audit.db refused, retried
        self._evicted = 0
        # One audit thread owns the tracker and audit.db; the store thread only hands batches over.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._lock = threading.Lock()
        self._queued = 0
        # The tracked state of earlier processes first: every batch queues behind it.
        self._executor.submit(self._load)

    def _load(self) -> None:
        try:
            rows = self.store.load_tracked()
            latest = self.store.load_latest()
        except Exception:  # an unreadable audit.db costs the earlier state, not the audits
            log.exception("audit: tracked state in %s not read; starting without it", self.store.path)
            return
        unreadable = 0
        for name, key, entry in latest:
            target = self._latest.get(name)
            if key is None or target is None:
                unreadable += 1
            elif key[0] not in self.maps:
                target.forget(key)  # a flow no longer audited
            else:
                target.load(key, entry)
        for flow, record, fields in rows:
            if fields is None or flow not in self.maps:
                # Unreadable, or a flow no longer audited: deleted from disk with the next batch.
                unreadable += fields is None
                self.tracker.forget(flow, record)
                continue
            self.tracker.load(flow, record, fields)
        if unreadable:
            log.warning("audit: %d tracked records or keys in %s unreadable, dropped", unreadable, self.store.path)
        self._write([])
        self._update_gauges()
        if self.tracker.fields or len(self.keys) or len(self.record_ids):
            log.info(
                "audit: %d tracked fields, %d idempotency keys, %d record IDs read back from %s",
                self.tracker.fields,
                len(self.keys),
                len(self.record_ids),
                self.store.path,
            )

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
                self._write(events)
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
        fill_previous(events, lookup, self.maps)
        # Durable first (findings, counts and tracked state in one transaction), then counted.
        self._write(events)
        for (flow, field, writer), (w, c, v) in labels.items():
            self.m.writes.labels(flow, field, writer).inc(w)
            if c:
                self.m.conflicts.labels(flow, field, writer).inc(c)
            if v:
                self.m.violations.labels(flow, field, writer).inc(v)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.m.tracked.set(self.tracker.fields)
        evicted = self.tracker.evicted + self.keys.evicted + self.record_ids.evicted
        if evicted > self._evicted:
            self.m.evicted.inc(evicted - self._evicted)
            self._evicted = evicted

    def flush(self) -> None:
        """Wait until every batch handed over so far is written (before a report is read)."""
        self.wait()

    def _write(self, events: list[dict[str, Any]]) -> None:
        events = self._unwritten + events
        counts, self._counts = self._counts, {}
        changes = self.tracker.take_changes()
        latest = [(name, key, entry) for name, m in self._latest.items() for key, entry in m.take_changes()]
        if not (events or counts or changes or latest):
            return
        try:
            self.store.write(events, counts, changes, latest)
        except Exception as exc:  # audit.db failing (disk full, locked): kept in memory, written with the next batch
            if not self._unwritten:
                log.error("audit: writing %s failed (%s); retried with the next batch", self.store.path, exc)
            self._unwritten = events[-self.cfg.max_events :]
            for ckey, n in counts.items():
                total = self._counts.setdefault(ckey, [0, 0, 0])
                for i in range(3):
                    total[i] += n[i]
            self.tracker.mark_changed((flow, record) for flow, record, _, _ in changes)
            for name, lkey, _ in latest:
                self._latest[name].mark_changed([lkey])
            return
        if self._unwritten:
            log.info("audit: %s written again", self.store.path)
            self._unwritten = []

    # -- retention -----------------------------------------------------------------------------
    def sweep(self, cutoff: float) -> None:
        self._executor.submit(self._sweep, cutoff).result()

    def _sweep(self, cutoff: float) -> None:
        self.tracker.sweep(cutoff)
        self.keys.sweep(cutoff)
        self.record_ids.sweep(cutoff)
        self.m.tracked.set(self.tracker.fields)
        self._write([])
        self.store.sweep(cutoff, self.clock() - self.cfg.report_retention)

    def close(self) -> None:
        def last() -> None:
            self._write([])
            self.store.close()

        self._executor.submit(last).result()
        self._executor.shutdown(wait=True)
