"""Prometheus metrics of the sidecar (names from SPEC.md). One instance per running sidecar,
on its own registry, so tests can read exact values and two sidecars never share state."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from syncwatch import __version__

# Sync lag buckets: 0.1 s to 24 h.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400)
BACKOFF_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50)


class BatchHistogram:
    """A labelled histogram fed a batch of observations at a time, with the same exposition as
    prometheus-client's Histogram (_bucket{le}, _sum, _count).

    The ledger observes two or three values per transaction; prometheus-client's Histogram takes a
    lock and walks its buckets in Python for each one. Here a batch costs one lock and a C bisect
    per value. A custom collector."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ):
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._bounds = [float(b) for b in buckets]
        self._le = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        # labels -> [count per bucket (non-cumulative; last is +Inf), sum]
        self._series: dict[tuple[str, ...], list[Any]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, labels: tuple[str, ...], values: list[float]) -> None:
        bounds = self._bounds
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = [[0] * (len(bounds) + 1), 0.0]
            counts, total = series
            for v in values:
                counts[bisect_left(bounds, v)] += 1  # first bucket whose upper bound is >= v
                total += v  # in order, so the sum is the one Histogram would show
            series[1] = total

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(labels, list(counts), total) for labels, (counts, total) in self._series.items()]
        for labels, counts, total in snapshot:
            cumulative, buckets = 0, []
            for le, n in zip(self._le, counts, strict=False):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, total)
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        tx = ("flow", "source", "destination")
        fd = ("flow", "destination")
        # Transactions, from traces.
        self.sync_lag = BatchHistogram(
            "syncwatch_sync_lag_seconds",
            "Time from the change at the source to its confirmation at the destination.",
            tx,
            LAG_BUCKETS,
            r,
        )
        self.transactions = Counter(
            "syncwatch_transactions",
            "Finished transactions by outcome (confirmed, failed, expired).",
            tx + ("outcome",),
            registry=r,
        )
        self.pending = Gauge(
            "syncwatch_transactions_pending", "Open transactions, within their deadline or not.", tx, registry=r
        )
        self.overdue = Gauge(
            "syncwatch_transactions_overdue",
            "Open transactions past their flow's deadline: sent and never confirmed.",
            tx,
            registry=r,
        )
        self.flow_deadline = Gauge(
            "syncwatch_flow_deadline_seconds", "Configured deadline to confirm, per flow.", ("flow",), registry=r
        )
        self.duplicate_applies = Counter(
            "syncwatch_duplicate_applies",
            "Second and later confirms with an idempotency key already applied.",
            fd,
            registry=r,
        )
        self.attempts = Counter(
            "syncwatch_attempts", "Delivery attempts by response code.", fd + ("status_code",), registry=r
        )
        self.retries = Counter("syncwatch_retries", "Delivery attempts after the first.", fd, registry=r)
        self.delivery_attempts = BatchHistogram(
            "syncwatch_delivery_attempts", "Attempts per finished transaction.", fd, ATTEMPT_BUCKETS, r
        )
        self.retry_backoff = BatchHistogram(
            "syncwatch_retry_backoff_seconds",
            "Time between the end of attempt n-1 and the start of attempt n.",
            fd,
            BACKOFF_BUCKETS,
            r,
        )
        self.retry_jitter = Gauge(
            "syncwatch_retry_jitter_ratio",
            "Coefficient of variation of recent backoffs at the same attempt number; near 0 means fixed-interval retries (retry-storm pattern).",
            fd,
            registry=r,
        )
        self.spans = Counter(
            "syncwatch_spans",
            "Spans received by correlation result (correlated, uncorrelated, rejected; with mapping rules, unrelated: spans of no flow, not part of coverage).",
            ("result",),
            registry=r,
        )
        self.clock_skew = Counter(
            "syncwatch_clock_skew_clamped",
            "Negative sync lags (confirm before source change: clock skew) clamped to 0.",
            ("flow",),
            registry=r,
        )
        self.label_overflow = Counter(
            "syncwatch_label_overflow",
            "Span values folded into a bounded metric label (other, invalid) instead of a series of their own, by label.",
            ("label",),
            registry=r,
        )
        # Itself.
        self.otlp_requests = Counter(
            "syncwatch_otlp_requests", "OTLP export requests by signal and answer code.", ("signal", "code"), registry=r
        )
        self.dropped = Counter(
            "syncwatch_dropped", "Items syncwatch itself lost or refused, by reason.", ("reason",), registry=r
        )
        self.build_info = Gauge("syncwatch_build_info", "Build information.", ("version",), registry=r)
        self.build_info.labels(__version__).set(1)
        self.intake_queue = Gauge(
            "syncwatch_intake_queued_spans",
            "Spans accepted by a receiver and waiting for the ledger writer.",
            registry=r,
        )
        # Replicas on one PostgreSQL ledger (ledger/lease.py): whole-ledger gauges exist only on the leader.
        self.leader = Gauge(
            "syncwatch_leader",
            "1 on the replica that holds the ledger's leader lease (always on SQLite), 0 on the others.",
            registry=r,
        )
        self.leader_changes = Counter(
            "syncwatch_leader_changes",
            "This replica became (acquired) or stopped being (lost) the ledger's leader.",
            ("change",),
            registry=r,
        )
        for change in ("acquired", "lost"):
            self.leader_changes.labels(change)
        self.handoff_backlog = Gauge(
            "syncwatch_handoff_backlog_spans",
            "Spans handed off by other replicas and waiting for the leader to apply them (0 off the leader).",
            registry=r,
        )
        self.ledger_commit = Histogram(
            "syncwatch_ledger_commit_seconds",
            "Time to record one batch in the ledger (group commit).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.log_records = Counter(
            "syncwatch_log_records", "OTLP log records received, by result.", ("result",), registry=r
        )
        self.auth_refusals = Counter(
            "syncwatch_auth_refusals",
            "Requests to the query API (surface api) or the web view (ui) refused for a missing or wrong token.",
            ("surface",),
            registry=r,
        )
        for surface in ("api", "ui"):
            self.auth_refusals.labels(surface)
        # Pre-create the result series so a rate() sees them from the first scrape.
        for result in ("correlated", "uncorrelated", "rejected", "unrelated"):
            self.spans.labels(result)
