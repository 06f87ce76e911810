"""Payload snapshots: the request body sent and the response received, per correlation ID, kept for
at least 72 hours, redacted before anything is stored.

`SnapshotIntake` is what the sidecar wires in: both OTLP receivers hand it their log requests, the
query API reads through it, and it runs the retention sweeper.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge

from syncwatch.config.errors import ConfigError
from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots.otlp_logs import DIRECTIONS, PayloadRecord, payload_records
from syncwatch.snapshots.redaction import Redactor
from syncwatch.snapshots.sqlite_store import SqliteSnapshotStore
from syncwatch.snapshots.store import STORE_UNAVAILABLE, Refused, Snapshot, SnapshotStore, StoreError, StoreReason
from syncwatch.snapshots.sweeper import RetentionSweeper

log = logging.getLogger("syncwatch.snapshots")

__all__ = [
    "Snapshot",
    "SnapshotIntake",
    "SnapshotStore",
    "StoreError",
    "build_redactor",
    "build_store",
    "load_hash_key",
]

_T = TypeVar("_T")

HASH_KEY_FILE = "snapshot-redaction.key"
# After a store failure, snapshots are dropped at once for this long instead of every request
# waiting for the store to time out again.
FAILURE_BACKOFF = 5.0
# A body longer than snapshots.max_bytes + this is redacted on its head only (it is stored cut at
# max_bytes anyway): redaction costs at most this much per payload, however large the body.
REDACT_MARGIN = 64 * 1024
# Log requests larger than this are read (bodies converted) in a worker thread, not on the loop.
OFFLOAD_BYTES = 256 * 1024


def load_hash_key(config: Config) -> bytes:
    """Key of the redaction markers' keyed hash: from config, a file, or generated once per data dir.
    It must stay the same across restarts, or equal values stop showing equal markers."""
    redact = config.snapshots.redact
    if redact.hash_key:
        return redact.hash_key.encode()
    if redact.hash_key_file:
        try:
            key = redact.hash_key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                "snapshots.redact.hash_key_file", f"cannot read {redact.hash_key_file}: {exc.strerror}"
            ) from None
        if len(key) < 16:
            raise ConfigError("snapshots.redact.hash_key_file", "the key must be at least 16 bytes")
        return key
    path = Path(config.storage.data_dir) / HASH_KEY_FILE
    try:
        if path.exists():
            return path.read_bytes().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        return key
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError("storage.data_dir", f"cannot create the redaction key {path}: {exc.strerror}") from None


def build_redactor(config: Config, hash_key: bytes | None = None) -> Redactor:
    r = config.snapshots.redact
    key = hash_key if hash_key is not None else load_hash_key(config)
    return Redactor(key, defaults=r.defaults, extra_keys=r.keys, paths=r.paths, patterns=r.patterns)


def build_store(config: Config) -> SnapshotStore:
    s = config.snapshots
    if s.backend.startswith("s3://"):
        from syncwatch.snapshots.s3_store import S3SnapshotStore

        return S3SnapshotStore(s.backend, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
    return SqliteSnapshotStore(Path(config.storage.data_dir) / "snapshots.db", max_bytes=s.max_store_bytes)


def body_bytes(body: Any) -> bytes:
    """The original body as bytes, for its size and keyed hash (what the sender's copy can be
    checked against, by whoever holds the key)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if body is None:
        return b""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def truncate(data: bytes, limit: int, content_type: str) -> bytes:
    cut = data[:limit]
    if content_type != "binary":
        cut = cut.decode("utf-8", "ignore").encode("utf-8")  # never end in half a character
    return cut


class SnapshotIntake:
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
        self._register_metrics(metrics.registry)
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

    def _register_metrics(self, r: CollectorRegistry) -> None:
        self.m_snapshots = Counter(
            "syncwatch_snapshots",
            "Payload snapshots by direction and result (stored, dropped).",
            ("direction", "result"),
            registry=r,
        )
        for d in DIRECTIONS:
            for result in ("stored", "dropped"):
                self.m_snapshots.labels(d, result)
        self.m_bytes = Gauge("syncwatch_snapshot_store_bytes", "Bytes used by the payload snapshot store.", registry=r)
        self.m_oldest = Gauge(
            "syncwatch_snapshot_oldest_age_seconds",
            "Age of the oldest stored payload snapshot (0 when empty).",
            registry=r,
        )
        self.m_oldest.set_function(lambda: max(0.0, self.clock() - self._oldest) if self._oldest is not None else 0.0)
        self.m_retention = Gauge(
            "syncwatch_snapshot_retention_seconds", "Configured payload snapshot retention.", registry=r
        )
        self.m_retention.set(self.settings.retention)
        self.m_redactions = Counter(
            "syncwatch_snapshot_redactions", "Values redacted from payload snapshots, by kind.", ("kind",), registry=r
        )
        self.m_store_up = Gauge(
            "syncwatch_snapshot_store_up",
            "1 while the last write to the snapshot store succeeded, 0 after a failure.",
            registry=r,
        )
        self.m_store_up.set(1)
        self.m_truncated = Counter(
            "syncwatch_snapshot_truncated", "Payload snapshots cut at snapshots.max_bytes.", registry=r
        )
        self.m_not_payload = self.metrics.log_records.labels("not_payload")
        self.m_payload = self.metrics.log_records.labels("payload")

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
        self.m_store_up.set(1)
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
        self.m_store_up.set(1)
        # Items the store refused one by one (an S3 key too long): only they are dropped.
        problems: dict[str, int] = {}
        for r in refused:
            self._drop(r.snapshot.direction, r.reason, 1)
            problems[r.message] = problems.get(r.message, 0) + 1
        stored: dict[str, int] = {}
        for s in snaps:
            stored[s.direction] = stored.get(s.direction, 0) + 1
        for direction, n in stored.items():
            self.m_snapshots.labels(direction, "stored").inc(n)
        if snaps:
            first = min(s.received for s in snaps)
            if self._oldest is None or first < self._oldest:
                self._oldest = first
        return problems

    def _capture_and_put(self, payloads: list[PayloadRecord], received: float) -> tuple[list[Snapshot], list[Refused]]:
        """Runs on the store thread: redact, truncate, compress, write, in one go. Returns the
        snapshots stored and those the store refused one by one."""
        snaps = []
        counted: list[tuple[Snapshot, dict[str, int]]] = []
        limit = self.settings.max_bytes
        for p in payloads:
            assert p.corr is not None and p.direction is not None  # sorted out by _sort_records
            raw = body_bytes(p.body)
            if len(raw) > limit + REDACT_MARGIN:
                result = self.redactor.redact_head(raw, limit + REDACT_MARGIN)
            else:
                result = self.redactor.redact_body(p.body, raw)
            data = result.data
            truncated = len(data) > limit
            if truncated:
                data = truncate(data, limit, result.content_type)
            snap = Snapshot(
                corr=p.corr,
                direction=p.direction,
                received=received,
                time=p.time or received,
                trace_id=p.trace_id,
                span_id=p.span_id,
                flow=p.flow,
                destination=p.destination,
                content_type=result.content_type,
                size=len(raw),
                sha256=hmac.digest(self._hash_key, raw, "sha256"),
                truncated=truncated,
                redactions=sum(result.counts.values()),
                body=data,
            )
            snaps.append(snap)
            counted.append((snap, result.counts))
        refused = self.store.put_many(snaps)
        gone = {id(r.snapshot) for r in refused}
        stored = [s for s in snaps if id(s) not in gone]
        # Counted once stored; a failed write stored nothing, so it redacted nothing either.
        redactions: dict[str, int] = {}
        for snap, counts in counted:
            if id(snap) in gone:
                continue
            if snap.truncated:
                self.m_truncated.inc()
            for kind, n in counts.items():
                redactions[kind] = redactions.get(kind, 0) + n
        for kind, n in redactions.items():
            self.m_redactions.labels(kind).inc(n)
        # Store size: exact after each sweep, estimated from the compressed sizes in between.
        self.m_bytes.inc(sum(s.stored_bytes for s in stored))
        return stored, refused

    def _failed(self, exc: StoreError) -> None:
        self._last_error = exc.message
        self._last_reason = exc.reason
        self._down_until = self.clock() + FAILURE_BACKOFF
        self.m_store_up.set(0)

    def _drop(self, direction: str, reason: str, n: int) -> None:
        self.m_snapshots.labels(direction, "dropped").inc(n)
        self.metrics.dropped.labels(reason).inc(n)

    def _drop_payloads(self, payloads: list[PayloadRecord], reason: str) -> None:
        for p in payloads:
            assert p.direction is not None  # sorted out by _sort_records
            self._drop(p.direction, reason, 1)

    # -- retention -----------------------------------------------------------------------------
    def _sweep_batch(self, cutoff: float, limit: int) -> int:
        if not self._opened:
            return 0
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
        self.m_bytes.set(stats.bytes)
        self._oldest = stats.oldest_received

    # -- reads (query API) ---------------------------------------------------------------------
    async def find(self, corr: str) -> list[Snapshot]:
        """Snapshots of one correlation ID, bodies decompressed (already redacted). Raises StoreError."""
        if not await self._ensure_open():
            raise StoreError(self._last_reason, self._last_error or "snapshot store unavailable")
        # Reads do not queue behind writes and sweeps: SQLite reads use their own connection,
        # S3 reads its own pool.
        return await asyncio.to_thread(self.store.find, corr)
