"""Payload snapshots: the request body sent and the response received, per correlation ID, kept for
at least 72 hours, redacted before anything is stored.

`SnapshotIntake` is what the sidecar wires in: both OTLP receivers hand it their log requests, the
query API reads through it, and it runs the retention sweeper.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from syncwatch.audit import make_auditor
from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots.capture import REDACT_MARGIN, body_bytes, capture
from syncwatch.snapshots.factory import build_redactor, build_store, load_hash_key
from syncwatch.snapshots.metrics import SnapshotMetrics
from syncwatch.snapshots.otlp_logs import PayloadRecord, payload_records
from syncwatch.snapshots.store import STORE_UNAVAILABLE, Refused, Snapshot, SnapshotStore, StoreError, StoreReason
from syncwatch.snapshots.sweeper import RetentionSweeper

log = logging.getLogger("syncwatch.snapshots")

__all__ = [
    "REDACT_MARGIN",
    "Snapshot",
    "SnapshotIntake",
    "SnapshotStore",
    "StoreError",
    "body_bytes",
    "build_redactor",
    "build_store",
    "load_hash_key",
]

_T = TypeVar("_T")

# After a store failure, snapshots are dropped at once for this long instead of every request
# waiting for the store to time out again.
FAILURE_BACKOFF = 5.0
# Log requests larger than this are read (bodies converted) in a worker thread, not on the loop.
OFFLOAD_BYTES = 256 * 1024


class SnapshotIntake:
    """Takes payload log records from both receivers, stores them through one SnapshotStore on
    a single store thread, and answers the query API; a failing store costs dropped snapshots
    (counted), never a stalled receiver."""

    def __init__(self, config: Config, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.settings = config.snapshots
        self.metrics = metrics
        self.clock = clock
        # The key of the redaction markers also keys the body hash: an unkeyed SHA-256 of a body
        # whose secret was redacted lets anyone test guesses for the secret against it.
        self._hash_key = load_hash_key(config)
        self.redactor = build_redactor(config, self._hash_key)
        self.store: SnapshotStore = build_store(config)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-store")
        self._opened = False
        self._down_until = 0.0
        self._last_error: str | None = None
        self._last_reason: StoreReason = STORE_UNAVAILABLE
        self._oldest: float | None = None
        self.m = SnapshotMetrics(metrics.registry, retention=self.settings.retention, oldest_age=self._oldest_age)
        self.m_not_payload = metrics.log_records.labels("not_payload")
        self.m_payload = metrics.log_records.labels("payload")
        self.auditor = make_auditor(config, metrics.registry, self._hash_key, clock)
        self.sweeper = RetentionSweeper(
            run=self._run,
            sweep_batch=self._sweep_batch,
            retention=self.settings.retention,
            interval=self.settings.sweep_interval,
            clock=clock,
            after_sweep=self._refresh_stats,
            batch=self.settings.sweep_batch,
            compact=self._compact,
        )

    def _oldest_age(self) -> float:
        return max(0.0, self.clock() - self._oldest) if self._oldest is not None else 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._ensure_open()
        self.sweeper.start()
        log.info(
            "payload snapshots: %s backend, retention %.0fh, max %d bytes per payload",
            self.store.name,
            self.settings.retention / 3600,
            self.settings.max_bytes,
        )

    async def stop(self) -> None:
        await self.sweeper.stop()
        if self.auditor is not None:
            await self._run(self.auditor.close)
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    async def _ensure_open(self) -> bool:
        if self._opened:
            return True
        try:
            await self._run(self.store.open)
        except StoreError as exc:
            self._failed(exc)
            log.error(
                "snapshot store unavailable (%s): %s; snapshots are dropped until it recovers", exc.reason, exc.message
            )
            return False
        self._opened = True
        self.m.store_up.set(1)
        await self._refresh_stats()
        return True

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking store call on the store's single thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- intake --------------------------------------------------------------------------------
    async def export_logs(self, request: ExportLogsServiceRequest) -> tuple[int, str]:
        """Store the payload snapshots of an OTLP log request; returns (rejected, message) for
        OTLP partial_success. Returns after the stored snapshots are committed."""
        received = self.clock()
        if request.ByteSize() > OFFLOAD_BYTES:
            # Key-value map bodies are converted value by value: a large request is read off the loop.
            payloads, problems, not_payload = await asyncio.to_thread(self._sort_records, request)
        else:
            payloads, problems, not_payload = self._sort_records(request)
        # Counted once per request, not per record: a labelled counter takes a lock per call.
        if not_payload:
            self.m_not_payload.inc(not_payload)
        rejected = sum(problems.values())
        if rejected + len(payloads):
            self.m_payload.inc(rejected + len(payloads))
        if payloads:
            for problem, n in (await self._store(payloads, received)).items():
                rejected += n
                problems[problem] = problems.get(problem, 0) + n
        message = "; ".join(f"{n} x {text}" for text, n in problems.items())
        return rejected, message

    def _sort_records(self, request: ExportLogsServiceRequest) -> tuple[list[PayloadRecord], dict[str, int], int]:
        """The request's payload records, the rejected ones' problems, and how many log records
        were no payload at all."""
        payloads: list[PayloadRecord] = []
        problems: dict[str, int] = {}
        not_payload = 0
        for rec in payload_records(request, self.config.correlation.keys, self.config.limits.max_correlation_id_length):
            if rec.direction is None:
                not_payload += 1
                continue
            if rec.direction == "invalid":
                self._drop("invalid", "snapshot_invalid_direction", 1)
                problem = "syncwatch.payload.direction must be request or response"
                problems[problem] = problems.get(problem, 0) + 1
            elif rec.corr_too_long:
                self._drop(rec.direction, "snapshot_correlation_id_too_long", 1)
                problem = (
                    f"correlation ID longer than {self.config.limits.max_correlation_id_length} characters "
                    "(limits.max_correlation_id_length)"
                )
                problems[problem] = problems.get(problem, 0) + 1
            elif rec.corr_invalid:
                # A newline in an ID forges log lines and breaks every list that shows it (as for spans).
                self._drop(rec.direction, "snapshot_correlation_id_invalid", 1)
                problem = "correlation ID contains control characters"
                problems[problem] = problems.get(problem, 0) + 1
            elif rec.corr is None:
                self._drop(rec.direction, "snapshot_uncorrelated", 1)
                problem = "payload log record without a correlation ID attribute"
                problems[problem] = problems.get(problem, 0) + 1
            else:
                payloads.append(rec)
        return payloads, problems, not_payload

    async def _store(self, payloads: list[PayloadRecord], received: float) -> dict[str, int]:
        """Store the payloads; returns the rejected ones' problems (message -> count)."""
        if self.clock() < self._down_until or not await self._ensure_open():
            self._drop_payloads(payloads, self._last_reason)
            return {f"snapshot store failing, snapshots not kept: {self._last_error}": len(payloads)}
        try:
            snaps, refused = await self._run(self._capture_and_put, payloads, received)
        except StoreError as exc:
            self._failed(exc)
            self._drop_payloads(payloads, exc.reason)
            log.warning(
                "snapshot store write failed (%s): %s; %d snapshots dropped", exc.reason, exc.message, len(payloads)
            )
            return {f"snapshot store failing, snapshots not kept: {exc.message}": len(payloads)}
        self.m.store_up.set(1)
        # Items the store refused one by one (an S3 key too long): only they are dropped.
        problems: dict[str, int] = {}
        for r in refused:
            self._drop(r.snapshot.direction, r.reason, 1)
            problems[r.message] = problems.get(r.message, 0) + 1
        stored: dict[str, int] = {}
        for s in snaps:
            stored[s.direction] = stored.get(s.direction, 0) + 1
        for direction, n in stored.items():
            self.m.snapshots.labels(direction, "stored").inc(n)
        if snaps:
            first = min(s.received for s in snaps)
            if self._oldest is None or first < self._oldest:
                self._oldest = first
        return problems

    def _capture_and_put(self, payloads: list[PayloadRecord], received: float) -> tuple[list[Snapshot], list[Refused]]:
        """Runs on the store thread: redact, truncate, compress, write, in one go. Returns the
        snapshots stored and those the store refused one by one."""
        counted = capture(payloads, received, self.redactor, self._hash_key, self.settings.max_bytes)
        snaps = [snap for snap, _ in counted]
        refused = self.store.put_many(snaps)
        gone = {id(r.snapshot) for r in refused}
        stored = [s for s in snaps if id(s) not in gone]
        # Counted once stored; a failed write stored nothing, so it redacted nothing either.
        redactions: dict[str, int] = {}
        for snap, counts in counted:
            if id(snap) in gone:
                continue
            if snap.truncated:
                self.m.truncated.inc()
            for kind, n in counts.items():
                redactions[kind] = redactions.get(kind, 0) + n
        for kind, n in redactions.items():
            self.m.redactions.labels(kind).inc(n)
        if self.auditor is not None:  # field ownership and idempotency audits, on redacted bodies
            kept = [(s, p) for (s, _), p in zip(counted, payloads, strict=True) if id(s) not in gone]
            self.auditor.submit(kept, self.store.find)
        # Store size: exact after each sweep, estimated from the compressed sizes in between.
        self.m.bytes.inc(sum(s.stored_bytes for s in stored))
        return stored, refused

    def _failed(self, exc: StoreError) -> None:
        self._last_error = exc.message
        self._last_reason = exc.reason
        self._down_until = self.clock() + FAILURE_BACKOFF
        self.m.store_up.set(0)

    def _drop(self, direction: str, reason: str, n: int) -> None:
        self.m.snapshots.labels(direction, "dropped").inc(n)
        self.metrics.dropped.labels(reason).inc(n)

    def _drop_payloads(self, payloads: list[PayloadRecord], reason: str) -> None:
        for p in payloads:
            assert p.direction is not None  # sorted out by _sort_records
            self._drop(p.direction, reason, 1)

    # -- retention -----------------------------------------------------------------------------
    def _sweep_batch(self, cutoff: float, limit: int) -> int:
        if not self._opened:
            return 0
        if self.auditor is not None:
            self.auditor.sweep(cutoff)
        return self.store.sweep(cutoff, limit)

    def _compact(self, pages: int) -> int:
        return self.store.compact(pages) if self._opened else 0

    async def sweep_now(self) -> int:
        """Run one retention sweep now (the periodic one runs every snapshots.sweep_interval)."""
        if not await self._ensure_open():
            return 0
        return await self.sweeper.sweep()

    async def _refresh_stats(self) -> None:
        if not self._opened:
            return
        try:
            stats = await self._run(self.store.stats)
        except StoreError:
            return
        self.m.bytes.set(stats.bytes)
        self._oldest = stats.oldest_received

    # -- reads (query API) ---------------------------------------------------------------------
    async def find(self, corr: str) -> list[Snapshot]:
        """Snapshots of one correlation ID, bodies decompressed (already redacted). Raises StoreError."""
        if not await self._ensure_open():
            raise StoreError(self._last_reason, self._last_error or "snapshot store unavailable")
        # Reads do not queue behind writes and sweeps: SQLite reads use their own connection,
        # S3 reads its own pool.
        return await asyncio.to_thread(self.store.find, corr)
