"""What SnapshotIntake calls once per stored batch, on its store thread: reads the redacted
request/response bodies of audited flows, feeds the write tracker and the idempotency maps,
counts findings and keeps them (with both writes, redacted) in audit.db."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from syncwatch.audit.metrics import AuditMetrics
from syncwatch.audit.models import AuditConfig
from syncwatch.audit.ownership import MISSING, UNMAPPED, FlowMap, ValueHasher, get_path, scalar_text
from syncwatch.audit.store import AuditStore, Counts, db_path
from syncwatch.audit.tracker import CONFLICT, LatestByKey, WriteTracker
from syncwatch.snapshots.otlp_logs import PayloadRecord
from syncwatch.snapshots.store import Snapshot

log = logging.getLogger("syncwatch.audit")

OTHER = "other"
MAX_TEXT = 200  # characters of a redacted value or ID kept in a finding
FLUSH_EVERY = 2.0
MAX_QUEUED = 20_000  # payloads handed to the audit thread and not yet audited  # seconds between write-count flushes when no finding forces one


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


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
                    self._record_id_found(flow, corr, destination, record_id[:MAX_TEXT], t, events)
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
                self._one(fmap, snap, rec, events, counts)
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
        self._fill_previous(events, lookup)
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

    def _one(
        self,
        fmap: FlowMap,
        snap: Snapshot,
        rec: PayloadRecord,
        events: list[dict[str, Any]],
        counts: dict[tuple[int, str, str, str, str], list[int]],
    ) -> None:
        body: Any = MISSING
        if snap.content_type == "json" and not snap.truncated:
            try:
                body = orjson.loads(snap.body)
            except orjson.JSONDecodeError:
                body = MISSING
        t = snap.time
        if snap.direction == "response":
            record_id = rec.record_id
            if record_id is None and fmap.record_id_steps is not None and body is not MISSING:
                record_id = scalar_text(get_path(body, fmap.record_id_steps))
            if record_id is not None:
                self._record_id(fmap, snap, record_id[:MAX_TEXT], events)
            return
        if body is MISSING:
            self.m.skipped.labels("truncated" if snap.truncated else "not_json").inc()
            return
        key = rec.idempotency_key
        if key is None and fmap.key_steps is not None:
            key = scalar_text(get_path(body, fmap.key_steps))
        if key is not None:
            prev_key = self.keys.swap((fmap.name, key), snap.sha256.hex()[:16], snap.corr, t)
            if prev_key is not None:
                self.m.key_reuse.labels(fmap.name).inc()
                events.append(
                    {
                        "kind": "key_reuse",
                        "flow": fmap.name,
                        "record": _text(key),
                        "writer": rec.source,
                        "time": t,
                        "corr": snap.corr,
                        "value": snap.sha256.hex()[:16],
                        "prev_time": prev_key[2],
                        "prev_corr": prev_key[1],
                        "prev_value": prev_key[0],
                    }
                )
        if not rec.source:
            self.m.skipped.labels("no_writer").inc()
            return
        record = fmap.record_key(body, snap.corr)
        if record is None:
            self.m.skipped.labels("no_record_key").inc()
            return
        writer = rec.source[:MAX_TEXT]
        values = list(fmap.values(body, t))
        h = self.hash
        found = self.tracker.observe_record(
            fmap.name, record, writer, t, snap.corr, fmap.window, [(name, h(v), owner) for name, _, v, owner in values]
        )
        day = int(t // 86400)
        for name, label, _v, _owner in values:
            ckey = (day, fmap.name, name, writer, label)
            c = counts.get(ckey)
            if c is None:
                c = counts[ckey] = [0, 0, 0]
            c[0] += 1
        if not found:
            return
        by_name = {name: (v, owner) for name, _, v, owner in values}
        for name, kind, prev in found:
            value, owner = by_name[name]
            label = name if fmap.fields else UNMAPPED
            counts[(day, fmap.name, name, writer, label)][1 if kind == CONFLICT else 2] += 1
            events.append(
                {
                    "kind": kind,
                    "flow": fmap.name,
                    "field": name,
                    "record": _text(record),
                    "writer": writer,
                    "owner": owner,
                    "time": t,
                    "corr": snap.corr,
                    "value": _text(value),
                    "prev_writer": prev[2],
                    "prev_time": prev[0],
                    "prev_corr": prev[3],
                    "_path": name,
                }
            )

    def _record_id(self, fmap: FlowMap, snap: Snapshot, record_id: str, events: list[dict[str, Any]]) -> None:
        self._record_id_found(fmap.name, snap.corr, snap.destination, record_id, snap.time, events)

    def _record_id_found(
        self, flow: str, corr: str, destination: str | None, record_id: str, t: float, events: list[dict[str, Any]]
    ) -> None:
        # Per destination: a customers change lands in two systems, each with its own record ID.
        prev = self.record_ids.swap((flow, corr, destination or ""), record_id, corr, t)
        if prev is None:
            return
        self.m.duplicate_records.labels(flow).inc()
        events.append(
            {
                "kind": "duplicate_record",
                "flow": flow,
                "record": corr,
                "writer": destination,
                "time": t,
                "corr": corr,
                "value": record_id,
                "prev_time": prev[2],
                "prev_corr": prev[1],
                "prev_value": prev[0],
            }
        )

    def _fill_previous(self, events: list[dict[str, Any]], lookup: Callable[[str], list[Snapshot]]) -> None:
        """The earlier write's redacted value, read back from its snapshot (findings are rare;
        at most 100 look-ups per batch, the rest show only the correlation ID)."""
        cache: dict[str, list[Snapshot]] = {}
        for e in events[:100]:
            path = e.pop("_path", None)
            if path is None or not e.get("prev_corr"):
                continue
            fmap = self.maps[e["flow"]]
            corr = e["prev_corr"]
            if corr not in cache:
                try:
                    cache[corr] = lookup(corr)
                except Exception:  # the snapshot store failing costs the side-by-side value only
                    cache[corr] = []
            for s in cache[corr]:
                if s.direction != "request" or s.time != e["prev_time"] or s.content_type != "json":
                    continue
                try:
                    body = json.loads(s.body)
                except ValueError:
                    continue
                for name, _label, value, _owner in fmap.values(body, s.time):
                    if name == path:
                        e["prev_value"] = _text(value)
                break
        for e in events[100:]:
            e.pop("_path", None)

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
