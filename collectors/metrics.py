"""Queue, DLQ and collector-health metrics (names from SPEC.md "Queues").

Queue series are rebuilt from each collector's latest successful sample at scrape time, so a queue
that disappears from the broker disappears from /metrics. While a collector is down its last values
stay exported (with `syncwatch_collector_up` 0 and an old last-success time): a DLQ page must not
resolve just because the broker stopped answering.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from syncwatch.collectors.base import REASONS, Sample

QUEUE_LABELS = ["broker", "namespace", "queue"]


class _QueueSeries:
    """prometheus_client custom collector over the latest samples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[str, Sample]] = {}

    def update(self, collector: str, broker: str, sample: Sample) -> None:
        with self._lock:
            self._latest[collector] = (broker, sample)

    def clear(self) -> None:
        with self._lock:
            self._latest.clear()

    def describe(self):
        return []

    def collect(self):
        depth = GaugeMetricFamily(
            "syncwatch_queue_messages", "Queue depth: visible / ready messages.", labels=QUEUE_LABELS
        )
        in_flight = GaugeMetricFamily(
            "syncwatch_queue_messages_in_flight",
            "Messages received but not yet deleted / acknowledged.",
            labels=QUEUE_LABELS,
        )
        delayed = GaugeMetricFamily(
            "syncwatch_queue_messages_delayed", "Delayed / scheduled messages.", labels=QUEUE_LABELS
        )
        oldest = GaugeMetricFamily(
            "syncwatch_queue_oldest_message_age_seconds",
            "Age of the oldest message, where the broker tells.",
            labels=QUEUE_LABELS,
        )
        consumers = GaugeMetricFamily(
            "syncwatch_queue_consumers",
            "Consumers attached to the queue, where the broker tells (0 with a growing depth: nobody is draining it).",
            labels=QUEUE_LABELS,
        )
        dlq = GaugeMetricFamily(
            "syncwatch_dlq_messages",
            "Dead-letter queue depth; source_queue = the queues whose failures land there.",
            labels=QUEUE_LABELS + ["source_queue"],
        )
        seen: set[tuple[str, ...]] = set()
        with self._lock:
            latest = sorted(self._latest.items())
        for _, (broker, sample) in latest:
            for q in sample.queues:
                key = ("q", broker, q.namespace, q.queue)
                if key in seen:  # two collectors watching the same queue: one series
                    continue
                seen.add(key)
                labels = [broker, q.namespace, q.queue]
                depth.add_metric(labels, q.messages)
                if q.in_flight is not None:
                    in_flight.add_metric(labels, q.in_flight)
                if q.delayed is not None:
                    delayed.add_metric(labels, q.delayed)
                if q.oldest_message_age_seconds is not None:
                    oldest.add_metric(labels, q.oldest_message_age_seconds)
                if q.consumers is not None:
                    consumers.add_metric(labels, q.consumers)
            for d in sample.dlqs:
                key = ("d", broker, d.namespace, d.queue)
                if key in seen:
                    continue
                seen.add(key)
                dlq.add_metric([broker, d.namespace, d.queue, ",".join(sorted(d.source_queues))], d.messages)
        return [depth, in_flight, delayed, oldest, consumers, dlq]


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.queues = _QueueSeries()
        registry.register(self.queues)
        c = ("collector",)
        self.up = Gauge("syncwatch_collector_up", "1 when the collector's last sample succeeded.", c, registry=registry)
        self.errors = Counter(
            "syncwatch_collector_errors",
            "Failed broker calls and refused answers by reason (unreachable, timeout, unauthorized, throttled, not_found, bad_response, too_large, other).",
            c + ("reason",),
            registry=registry,
        )
        self.sample_duration = Gauge(
            "syncwatch_collector_sample_duration_seconds",
            "Duration of the collector's last sample.",
            c,
            registry=registry,
        )
        self.interval = Gauge(
            "syncwatch_collector_interval_seconds",
            "Sampling interval in force (interval or fast_interval).",
            c,
            registry=registry,
        )
        self.last_success = Gauge(
            "syncwatch_collector_last_success_timestamp_seconds",
            "Unix time of the last successful sample.",
            c,
            registry=registry,
        )
        self.api_calls = Counter(
            "syncwatch_collector_api_calls", "Broker API calls made by the collector.", c, registry=registry
        )

    def forget_gauges(self) -> None:
        """This replica does not lead: no collector gauges, so a sum over replicas counts each once."""
        for gauge in (self.up, self.sample_duration, self.interval, self.last_success):
            gauge.clear()
        self.queues.clear()

    def register_collector(self, name: str, interval: float) -> None:
        # Series exist from the start, so `up == 0` and rate(errors) work before the first failure.
        self.up.labels(name).set(0)
        self.interval.labels(name).set(interval)
        for reason in REASONS:
            self.errors.labels(name, reason)
        self.api_calls.labels(name)
