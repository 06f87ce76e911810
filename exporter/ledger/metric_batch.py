"""The ledger's metric updates, held per batch and applied after its commit: metrics then describe
exactly what is durable, and a batch costs one update per series instead of one per span. Labels
are folded into bounded sets here (metrics/labels.py), and the retry-jitter windows live here.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from typing import Any, overload

from prometheus_client import Counter, Gauge

from syncwatch.config.models import Config
from syncwatch.ledger.records import TxLabels
from syncwatch.metrics.labels import UNKNOWN, LabelSets
from syncwatch.metrics.registry import BatchHistogram, Metrics

JITTER_WINDOW = 50  # recent backoffs kept per (flow, destination, attempt number)
JITTER_MIN_SAMPLES = 5
JITTER_MAX_N = 16  # attempt numbers above this share one jitter window

Labels = tuple[Any, ...]  # span values in a metric's label order (a code may be None)
Series = Counter | Gauge  # the metrics a batch counts into
OUTCOMES = ("confirmed", "failed", "expired")  # a closed transaction's outcome (closing.py)


class MetricBatch:
    """Counter and gauge deltas and histogram observations of one batch, keyed by span values."""

    def __init__(self, config: Config, metrics: Metrics):
        self.metrics = metrics
        self.label_sets = LabelSets(config, metrics)
        # Counter and gauge deltas: metric -> span values -> delta. A metric's dict is emptied after
        # each batch, never replaced, so the hot path holds the ones it adds to inline (counts()),
        # and a transaction's shared labels tuple finds its entry by identity.
        self.deltas: dict[Series, dict[Labels, float]] = {}
        # Closed transactions, per outcome by the transaction's labels: the transactions metric's
        # (*labels, outcome) is built once per series and batch instead of once per close.
        self.closes: dict[str, dict[TxLabels, float]] = {outcome: {} for outcome in OUTCOMES}
        # Each series' first delta in the batch, in order: (its dict, key, metric, label values).
        # Applied in that order, as label folding (LabelSets) gives the first values seen a label.
        self._series: list[tuple[dict[Any, float], Any, Series, Labels]] = []
        # Histogram observations: histogram -> span values -> values, emptied after each batch like
        # the deltas; each series in the order of its first observation (folding order, as above).
        self._obs: dict[BatchHistogram, dict[Labels, list[float]]] = {}
        self._obs_series: list[tuple[BatchHistogram, Labels, list[float]]] = []
        self._fold_cache: dict[tuple[int, Labels], Labels] = {}
        self._child_cache: dict[tuple[int, Labels], Series] = {}
        self._jitter: defaultdict[tuple[str, str, int], deque[float]] = defaultdict(lambda: deque(maxlen=JITTER_WINDOW))
        self._jitter_dirty: set[tuple[str, str]] = set()
        self._backoffs: list[tuple[Labels, int, float]] = []  # added to the windows after commit
        self._attempts = self.counts(metrics.attempts)

    # ---- labels --------------------------------------------------------------------------------
    @overload
    def child(self, metric: Gauge, *labels: Any) -> Gauge: ...
    @overload
    def child(self, metric: Counter, *labels: Any) -> Counter: ...
    @overload
    def child(self, metric: Series, *labels: Any) -> Series: ...
    def child(self, metric: Series, *labels: Any) -> Series:
        """The metric's child for these span values, labels folded. prometheus-client's labels() is
        the expensive part of an update: children are cached."""
        folded = self.metric_labels(metric, labels)
        key = (id(metric), folded)
        child = self._child_cache.get(key)
        if child is None:
            child = self._child_cache[key] = metric.labels(*folded)
        return child

    def metric_labels(self, metric: Series | BatchHistogram, labels: Labels) -> Labels:
        """Span values to metric labels from bounded sets (labels.LabelSets); cached only when
        nothing was folded, so the cache is as bounded as the label sets."""
        key = (id(metric), labels)
        folded = self._fold_cache.get(key)
        if folded is not None:
            return folded
        names = metric.labelnames if isinstance(metric, BatchHistogram) else metric._labelnames
        sets, out, flow = self.label_sets, [], ""
        for name, value in zip(names, labels, strict=False):
            if name == "flow":
                value = flow = sets.flow(value)
            elif name in ("source", "destination"):
                value = UNKNOWN if value == UNKNOWN else sets.system(flow, value)
            elif name == "status_code":
                value = sets.code(value)
            out.append(value)
        folded = tuple(out)
        if folded == labels:
            self._fold_cache[key] = folded
        return folded

    # ---- a batch -------------------------------------------------------------------------------
    def counts(self, metric: Series) -> dict[Labels, float]:
        """This metric's deltas by span values, the same dict for the batch's lifetime. Who adds to it
        calls `new_series` first when the key is not in it yet."""
        counts = self.deltas.get(metric)
        if counts is None:
            counts = self.deltas[metric] = {}
        return counts

    def new_series(self, counts: dict[Any, float], key: Any, metric: Series, values: Labels) -> None:
        """The first delta of a series in this batch, under `key` in `counts` (labels `values`)."""
        self._series.append((counts, key, metric, values))

    def inc(self, metric: Series, labels: Labels, n: float = 1) -> None:
        counts = self.deltas.get(metric)
        if counts is None:
            counts = self.deltas[metric] = {}
        old = counts.get(labels)
        if old is None:
            self._series.append((counts, labels, metric, labels))
            old = 0
        counts[labels] = old + n

    def observe(self, histogram: BatchHistogram, labels: Labels, value: float) -> None:
        observed = self._obs.get(histogram)
        if observed is None:
            observed = self._obs[histogram] = {}
        values = observed.get(labels)
        if values is None:
            values = observed[labels] = []
            self._obs_series.append((histogram, labels, values))
        values.append(value)

    def attempt(self, flow: str, dest: str, code: str | None, n: int) -> None:
        """Attempt number n of a transaction, with its response code."""
        counts, key = self._attempts, (flow, dest, code)  # inc, inlined: once per attempt
        old = counts.get(key)
        if old is None:
            self._series.append((counts, key, self.metrics.attempts, key))
            old = 0
        counts[key] = old + 1
        if n > 1:
            self.inc(self.metrics.retries, (flow, dest))

    def lag(self, labels: Labels, lag: float) -> float:
        """A sync lag observed for a transaction's (flow, source or "unknown", destination) (its
        shared labels tuple where they match); a negative one (clocks that disagree) counts as skew
        and becomes 0."""
        if lag < 0:
            self.inc(self.metrics.clock_skew, (labels[0],))
            lag = 0.0
        self.observe(self.metrics.sync_lag, labels, lag)
        return lag

    def backoff(self, flow: str, dest: str, n: int, backoff: float) -> None:
        """The time between attempt n-1 and attempt n: the backoff histogram and the jitter window."""
        if backoff < 0:
            return  # overlapping attempts (clock skew between hosts): no meaningful backoff
        self.observe(self.metrics.retry_backoff, (flow, dest), backoff)
        self._backoffs.append(((flow, dest), min(n, JITTER_MAX_N), backoff))

    def apply(self) -> None:
        """After a commit: the batch's updates go to the metrics."""
        for counts, key, metric, label_values in self._series:
            n = counts[key]
            if n:
                self.child(metric, *label_values).inc(n)
        for histogram, labels, values in self._obs_series:
            histogram.observe_many(self.metric_labels(histogram, labels), values)
        self._clear_deltas()
        if self._backoffs:
            self._update_jitter()

    def discard(self) -> None:
        """After a rollback: the batch's updates describe nothing durable."""
        self._clear_deltas()
        self._backoffs.clear()

    def _clear_deltas(self) -> None:
        self._series.clear()
        for counts in self.deltas.values():
            counts.clear()  # emptied, not dropped: the hot path holds them
        for closes in self.closes.values():
            closes.clear()
        self._obs_series.clear()
        for observed in self._obs.values():
            observed.clear()

    def zero_open_gauges(self) -> None:
        """Pending and overdue to 0, before memory is rebuilt from the store."""
        m = self.metrics
        for (metric_id, _), child in self._child_cache.items():
            if metric_id in (id(m.pending), id(m.overdue)) and isinstance(child, Gauge):
                child.set(0)

    def forget(self) -> None:
        """This replica no longer leads: the whole-ledger gauges lose their series (another replica
        exports them now, and a sum over replicas must not count them twice) and the batch forgets
        its cached children and jitter windows."""
        self.discard()
        m = self.metrics
        for gauge in (m.pending, m.overdue, m.retry_jitter):
            gauge.clear()
        self._child_cache.clear()
        self._jitter.clear()
        self._jitter_dirty.clear()

    def _update_jitter(self) -> None:
        gauge = self.metrics.retry_jitter
        for fd, n, backoff in self._backoffs:
            flow, dest = self.metric_labels(gauge, fd)  # windows per metric series, so they stay bounded
            self._jitter[(flow, dest, n)].append(backoff)
            self._jitter_dirty.add((flow, dest))
        self._backoffs.clear()
        for flow, dest in self._jitter_dirty:
            total_w = total = 0.0
            for (f, d, _n), window in self._jitter.items():
                if f != flow or d != dest or len(window) < JITTER_MIN_SAMPLES:
                    continue
                mean = sum(window) / len(window)
                if mean <= 0:
                    continue
                sd = math.sqrt(sum((b - mean) ** 2 for b in window) / len(window))
                total += (sd / mean) * len(window)
                total_w += len(window)
            if total_w:
                self.child(gauge, flow, dest).set(total / total_w)
        self._jitter_dirty.clear()
