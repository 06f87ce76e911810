"""Bounded metric label sets: flows, systems and response codes come from span data, so each label
takes the configured values plus at most a configured number of others, then folds into "other".

The values a span carries are kept in full in the ledger; only the metric label is folded.
"""

from __future__ import annotations

from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics

OTHER = "other"
INVALID = "invalid"
NONE = "none"
UNKNOWN = "unknown"
_FOLDED = frozenset((OTHER, INVALID, NONE, UNKNOWN))  # labels syncwatch itself gives: always known


class LabelSets:
    def __init__(self, config: Config, metrics: Metrics):
        limits = config.limits
        self._max_flows = limits.max_unknown_flows
        self._max_systems = limits.max_unknown_systems
        self._max_codes = limits.max_response_codes
        self._flows: set[str] = set(config.flows) | _FOLDED
        self._extra_flows = 0
        # Per flow label: the systems that get a label of their own (configured destinations first).
        self._systems: dict[str, set[str]] = {name: set(f.destinations) | _FOLDED for name, f in config.flows.items()}
        self._extra_systems: dict[str, int] = {}
        self._codes: set[str] = set()
        overflow = metrics.label_overflow
        self._flow_overflow = overflow.labels("flow")
        self._system_overflow = overflow.labels("system")
        self._code_overflow = overflow.labels("status_code")

    def flow(self, name: str) -> str:
        if name in self._flows:
            return name
        if self._extra_flows < self._max_flows:
            self._extra_flows += 1
            self._flows.add(name)
            return name
        self._flow_overflow.inc()
        return OTHER

    def system(self, flow_label: str, name: str | None) -> str | None:
        """Label of a source or destination within a (folded) flow label; None stays None."""
        if name is None:
            return None
        known = self._systems.get(flow_label)
        if known is None:
            known = self._systems[flow_label] = set(_FOLDED)
        if name in known:
            return name
        extra = self._extra_systems.get(flow_label, 0)
        if extra < self._max_systems:
            self._extra_systems[flow_label] = extra + 1
            known.add(name)
            return name
        self._system_overflow.inc()
        return OTHER

    def code(self, code: str | None) -> str:
        """HTTP codes 100-599 are their own label; other codes up to a bound, then "other"."""
        if code is None:
            return NONE
        if len(code) == 3 and code.isdigit() and "100" <= code <= "599":
            return code
        if code in self._codes or code in _FOLDED:
            return code
        if code.isdigit() or code.lstrip("-").isdigit():
            self._code_overflow.inc()
            return INVALID  # a number outside HTTP's range
        if len(self._codes) < self._max_codes and len(code) <= 64:
            self._codes.add(code)
            return code
        self._code_overflow.inc()
        return OTHER
