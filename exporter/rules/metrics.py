"""Metrics of the mapping rules and the stitching index (labels: rule names and fixed enums)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RulesMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.matches = Counter(
            "syncwatch_rule_matches", "Spans mapped by each mapping rule (rules.map).", ("rule",), registry=registry
        )
        self.stitch_entries = Gauge(
            "syncwatch_stitch_entries",
            "Entries of the stitching index: learned (trace and message IDs -> correlation ID) and pending (spans of a flow waiting for one).",
            ("index",),
            registry=registry,
        )
        self.stitch_evictions = Counter(
            "syncwatch_stitch_evictions",
            "Entries dropped from the stitching index, by index and reason (age: rules.stitch.window, size: its limits). An evicted pending span counts as uncorrelated.",
            ("index", "reason"),
            registry=registry,
        )
        for index in ("learned", "pending"):
            self.stitch_entries.labels(index)
            for reason in ("age", "size"):
                self.stitch_evictions.labels(index, reason)
