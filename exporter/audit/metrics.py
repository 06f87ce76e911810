"""Audit metrics. Flow, field and writer labels come from config only: an unmapped field is
`unmapped`, a writer no config names is `other`; a payload cannot create a series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        labels = ("flow", "field", "writer")
        self.writes = Counter(
            "syncwatch_audit_writes", "Field writes seen in request payloads of audited flows.", labels, registry=r
        )
        self.conflicts = Counter(
            "syncwatch_audit_conflicts",
            "Writes changing a field another system changed within the flow's sync window (writer: the later one).",
            labels,
            registry=r,
        )
        self.violations = Counter(
            "syncwatch_audit_violations",
            "Writes changing an owned field by a system that does not own it at that time.",
            labels,
            registry=r,
        )
        self.key_reuse = Counter(
            "syncwatch_audit_idempotency_key_reuse",
            "Request payloads reusing an idempotency key with a different body.",
            ("flow",),
            registry=r,
        )
        self.duplicate_records = Counter(
            "syncwatch_audit_duplicate_records",
            "Correlation IDs confirmed into a second, different destination record ID.",
            ("flow",),
            registry=r,
        )
        self.skipped = Counter(
            "syncwatch_audit_skipped",
            "Payloads of audited flows not audited, by reason (not_json, truncated, no_record_key, no_writer, error).",
            ("reason",),
            registry=r,
        )
        self.tracked = Gauge("syncwatch_audit_tracked_fields", "Fields whose latest write is tracked.", registry=r)
        self.evicted = Counter(
            "syncwatch_audit_evicted",
            "Tracked fields dropped at audit.max_tracked_fields (least recently written first).",
            registry=r,
        )
