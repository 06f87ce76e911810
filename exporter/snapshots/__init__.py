"""Payload snapshots: the request body sent and the response received, per correlation ID, kept for
at least 72 hours, redacted before anything is stored.

`SnapshotIntake` is what the sidecar wires in: both OTLP receivers hand it their log requests, the
query API reads through it, and it runs the retention sweeper.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from prometheus_client import Counter, Gauge

from ..config import Config
from ..errors import ConfigError
from ..metrics import Metrics
from .otlp_logs import DIRECTIONS, PayloadRecord, payload_records
from .redaction import Redactor
from .sqlite_store import SqliteSnapshotStore
from .store import STORE_UNAVAILABLE, Snapshot, StoreError, StoreStats
from .sweeper import RetentionSweeper

log = logging.getLogger("syncwatch.snapshots")

__all__ = ["SnapshotIntake", "Snapshot", "StoreError", "load_hash_key", "build_redactor", "build_store"]

HASH_KEY_FILE = "snapshot-redaction.key"
# After a store failure, snapshots are dropped at once for this long instead of every request
# waiting for the store to time out again.
FAILURE_BACKOFF = 5.0


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
            raise ConfigError("snapshots.redact.hash_key_file", f"cannot read {redact.hash_key_file}: {exc.strerror}") from None
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


def build_redactor(config: Config) -> Redactor:
    r = config.snapshots.redact
    return Redactor(load_hash_key(config), defaults=r.defaults, extra_keys=r.keys, paths=r.paths, patterns=r.patterns)


def build_store(config: Config):
    s = config.snapshots
    if s.backend.startswith("s3://"):
        from .s3_store import S3SnapshotStore

        return S3SnapshotStore(s.backend, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
    return SqliteSnapshotStore(Path(config.storage.data_dir) / "snapshots.db", max_bytes=s.max_store_bytes)


def body_bytes(body) -> bytes:
    """The original body as bytes, for its size and SHA-256 (what the sender can compare with)."""
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
    def __init__(self, config: Config, metrics: Metrics, clock: Callable[[], float] = time.time):
        self.config = config
        self.settings = config.snapshots
        self.metrics = metrics
        self.clock = clock
        self.redactor = build_redactor(config)
        self.store = build_store(config)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-store")
        self._opened = False
        self._down_until = 0.0
        self._last_error: str | None = None
        self._last_reason = STORE_UNAVAILABLE
        self._oldest: float | None = None
        self._register_metrics(metrics.registry)
        self.sweeper = RetentionSweeper(
            run=self._run, sweep_batch=self._sweep_batch, retention=self.settings.retention,
            interval=self.settings.sweep_interval, clock=clock, after_sweep=self._refresh_stats,
            batch=self.settings.sweep_batch, compact=self._compact,
        )

    def _register_metrics(self, r) -> None:
        self.m_snapshots = Counter("syncwatch_snapshots", "Payload snapshots by direction and result (stored, dropped).", ("direction", "result"), registry=r)
        for d in DIRECTIONS:
            for result in ("stored", "dropped"):
                self.m_snapshots.labels(d, result)
        self.m_bytes = Gauge("syncwatch_snapshot_store_bytes", "Bytes used by the payload snapshot store.", registry=r)
        self.m_oldest = Gauge("syncwatch_snapshot_oldest_age_seconds", "Age of the oldest stored payload snapshot (0 when empty).", registry=r)
        self.m_oldest.set_function(lambda: max(0.0, self.clock() - self._oldest) if self._oldest is not None else 0.0)
        self.m_retention = Gauge("syncwatch_snapshot_retention_seconds", "Configured payload snapshot retention.", registry=r)
        self.m_retention.set(self.settings.retention)
        self.m_redactions = Counter("syncwatch_snapshot_redactions", "Values redacted from payload snapshots, by kind.", ("kind",), registry=r)
        self.m_store_up = Gauge("syncwatch_snapshot_store_up", "1 while the last write to the snapshot store succeeded, 0 after a failure.", registry=r)
        self.m_store_up.set(1)
        self.m_truncated = Counter("syncwatch_snapshot_truncated", "Payload snapshots cut at snapshots.max_bytes.", registry=r)
        self.m_not_payload = self.metrics.log_records.labels("not_payload")
        self.m_payload = self.metrics.log_records.labels("payload")

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._ensure_open()
        self.sweeper.start()
        log.info("payload snapshots: %s backend, retention %.0fh, max %d bytes per payload",
                 self.store.name, self.settings.retention / 3600, self.settings.max_bytes)

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
            log.error("snapshot store unavailable (%s): %s; snapshots are dropped until it recovers", exc.reason, exc.message)
            return False
        self._opened = True
        self.m_store_up.set(1)
        await self._refresh_stats()
        return True

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- intake --------------------------------------------------------------------------------
    async def export_logs(self, request) -> tuple[int, str]:
        """Store the payload snapshots of an OTLP log request; returns (rejected, message) for
        OTLP partial_success. Returns after the stored snapshots are committed."""
        received = self.clock()
        payloads: list[PayloadRecord] = []
        problems: dict[str, int] = {}
        not_payload = 0
        for rec in payload_records(request, self.config.correlation.keys):
            if rec.direction is None:
                not_payload += 1
                continue
            if rec.direction == "invalid":
                self._drop("invalid", "snapshot_invalid_direction", 1)
                problem = "syncwatch.payload.direction must be request or response"
                problems[problem] = problems.get(problem, 0) + 1
            elif rec.corr is None:
                self._drop(rec.direction, "snapshot_uncorrelated", 1)
                problem = "payload log record without a correlation ID attribute"
                problems[problem] = problems.get(problem, 0) + 1
            else:
                payloads.append(rec)
        # Counted once per request, not per record: a labelled counter takes a lock per call.
        if not_payload:
            self.m_not_payload.inc(not_payload)
        rejected = sum(problems.values())
        if rejected + len(payloads):
            self.m_payload.inc(rejected + len(payloads))
        if payloads:
            stored_error = await self._store(payloads, received)
            if stored_error:
                rejected += len(payloads)
                problems[stored_error] = len(payloads)
        message = "; ".join(f"{n} x {text}" for text, n in problems.items())
        return rejected, message

    async def _store(self, payloads: list[PayloadRecord], received: float) -> str | None:
        if self.clock() < self._down_until or not await self._ensure_open():
            self._drop_payloads(payloads, self._last_reason)
            return f"snapshot store failing, snapshots not kept: {self._last_error}"
        try:
            snaps = await self._run(self._capture_and_put, payloads, received)
        except StoreError as exc:
            self._failed(exc)
            self._drop_payloads(payloads, exc.reason)
            log.warning("snapshot store write failed (%s): %s; %d snapshots dropped", exc.reason, exc.message, len(payloads))
            return f"snapshot store failing, snapshots not kept: {exc.message}"
        self.m_store_up.set(1)
        stored: dict[str, int] = {}
        for s in snaps:
            stored[s.direction] = stored.get(s.direction, 0) + 1
        for direction, n in stored.items():
            self.m_snapshots.labels(direction, "stored").inc(n)
        if snaps:
            first = min(s.received for s in snaps)
            if self._oldest is None or first < self._oldest:
                self._oldest = first
        return None

    def _capture_and_put(self, payloads: list[PayloadRecord], received: float) -> list[Snapshot]:
        """Runs on the store thread: redact, truncate, compress, write, in one go."""
        snaps = []
        limit = self.settings.max_bytes
        redactions: dict[str, int] = {}
        for p in payloads:
            raw = body_bytes(p.body)
            result = self.redactor.redact_body(p.body, raw)
            data = result.data
            truncated = len(data) > limit
            if truncated:
                data = truncate(data, limit, result.content_type)
                self.m_truncated.inc()
            for kind, n in result.counts.items():
                redactions[kind] = redactions.get(kind, 0) + n
            snaps.append(Snapshot(
                corr=p.corr, direction=p.direction, received=received, time=p.time or received,
                trace_id=p.trace_id, span_id=p.span_id, flow=p.flow, destination=p.destination,
                content_type=result.content_type, size=len(raw), sha256=hashlib.sha256(raw).digest(),
                truncated=truncated, redactions=sum(result.counts.values()), body=data,
            ))
        self.store.put_many(snaps)
        # Counted once stored; a failed write stored nothing, so it redacted nothing either.
        for kind, n in redactions.items():
            self.m_redactions.labels(kind).inc(n)
        # Store size: exact after each sweep, estimated from the compressed sizes in between.
        self.m_bytes.inc(sum(s.stored_bytes for s in snaps))
        return snaps

    def _stats_or_none(self) -> StoreStats | None:
        try:
            return self.store.stats()
        except StoreError:
            return None

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
