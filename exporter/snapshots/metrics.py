"""The payload snapshots' own metrics (syncwatch_snapshot*), registered together.

Label values come from bounded sets only: the two directions, stored/dropped, and redaction
kinds (built-in names and configured pattern names).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from syncwatch.snapshots.otlp_logs import DIRECTIONS


class SnapshotMetrics:
    def __init__(self, registry: CollectorRegistry, *, retention: float, oldest_age: Callable[[], float]) -> None:
        r = registry
        self.snapshots = Counter(
            "syncwatch_snapshots",
            "Payload snapshots by direction and result (stored, dropped).",
            ("direction", "result"),
            registry=r,
        )
        for d in DIRECTIONS:
            for result in ("stored", "dropped"):
                self.snapshots.labels(d, result)
        self.bytes = Gauge("syncwatch_snapshot_store_bytes", "Bytes used by the payload snapshot store.", registry=r)
        self.oldest = Gauge(
            "syncwatch_snapshot_oldest_age_seconds",
            "Age of the oldest stored payload snapshot (0 when empty).",
            registry=r,
        )
        self.oldest.set_function(oldest_age)
        self.retention = Gauge(
            "syncwatch_snapshot_retention_seconds", "Configured payload snapshot retention.", registry=r
        )
        self.retention.set(retention)
        self.redactions = Counter(
            "syncwatch_snapshot_redactions", "Values redacted from payload snapshots, by kind.", ("kind",), registry=r
        )
        self.store_up = Gauge(
            "syncwatch_snapshot_store_up",
            "1 while the last write to the snapshot store succeeded, 0 after a failure.",
            registry=r,
        )
        self.store_up.set(1)
        self.truncated = Counter(
            "syncwatch_snapshot_truncated", "Payload snapshots cut at snapshots.max_bytes.", registry=r
        )
