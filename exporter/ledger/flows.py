"""What the configuration says about a flow, as the transitions ask it on every span: its deadline,
whether it applies exactly once, the destinations a source span opens transactions for; and the
(flow, source, destination) tuples transactions share.
"""

from __future__ import annotations

from collections.abc import Sequence

from syncwatch.config.models import Config
from syncwatch.ledger.records import TxLabels

UNKNOWN = "unknown"  # a transaction's source before its source span names one
MAX_SHARED_LABELS = 100_000  # distinct (flow, source, destination) tuples shared between transactions


class FlowRules:
    def __init__(self, config: Config):
        self.flows = config.flows
        self.unknown_deadline = config.correlation.unknown_flow_deadline
        self._labels: dict[TxLabels, TxLabels] = {}
        self._dests: dict[tuple[str, str | None], tuple[str, ...]] = {}

    def deadline(self, flow: str) -> float:
        """Seconds from the change at the source to the confirmation, for this flow."""
        cfg = self.flows.get(flow)
        return cfg.deadline if cfg is not None else self.unknown_deadline

    def exactly_once(self, flow: str) -> bool:
        """Whether a second apply of the same operation counts as a duplicate apply."""
        cfg = self.flows.get(flow)
        return cfg.exactly_once if cfg is not None else True

    def configured_destinations(self, flow: str) -> Sequence[str]:
        """Every destination configured for the flow (none for a flow not configured)."""
        cfg = self.flows.get(flow)
        return cfg.destinations if cfg is not None else ()

    def destinations(self, flow: str, source: str | None) -> tuple[str, ...]:
        """The configured destinations a source span of `flow` from `source` opens transactions for."""
        dests = self._dests.get((flow, source))
        if dests is None:
            dests = tuple(d for d in self.configured_destinations(flow) if d != source)
            if len(self._dests) < MAX_SHARED_LABELS:  # flow and source names come from spans: bounded
                self._dests[(flow, source)] = dests
        return dests

    def labels(self, flow: str, source: str | None, dest: str) -> TxLabels:
        """(flow, source, destination) of a transaction, one shared tuple per distinct value. These
        are the span's values; metric labels are folded from them (MetricBatch.metric_labels)."""
        key = (flow, source or UNKNOWN, dest)
        labels = self._labels.get(key)
        if labels is None:
            labels = key
            if len(self._labels) < MAX_SHARED_LABELS:
                self._labels[key] = key
        return labels
