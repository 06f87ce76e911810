"""Reconciler health (like collector health) and what reconciliation finds. Labels come from the
config (reconciler and flow names) and fixed sets (kind, reason, side), never from database rows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from syncwatch.reconcile.base import KINDS, REASONS


class ReconcileMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = ("reconciler",)
        rf = ("reconciler", "flow")
        self.up = Gauge("syncwatch_reconciler_up", "1 when the reconciler's last run succeeded.", r, registry=registry)
        self.errors = Counter(
            "syncwatch_reconciler_errors",
            "Failed reconciler runs by reason (unreachable, timeout, unauthorized, query_error, bad_result, other).",
            r + ("reason",),
            registry=registry,
        )
        self.duration = Gauge(
            "syncwatch_reconciler_run_duration_seconds", "Duration of the reconciler's last run.", r, registry=registry
        )
        self.last_success = Gauge(
            "syncwatch_reconciler_last_success_timestamp_seconds",
            "Unix time of the reconciler's last successful run.",
            r,
            registry=registry,
        )
        self.rows = Counter(
            "syncwatch_reconciler_rows_read",
            "Rows read from the systems of record; side = source or destination.",
            rf + ("side",),
            registry=registry,
        )
        self.findings = Gauge(
            "syncwatch_reconcile_findings",
            "Reconciliation findings now: missing, duplicated and never_traced while they hold; late recorded within retention.",
            rf + ("kind",),
            registry=registry,
        )
        self.found = Counter(
            "syncwatch_reconcile_found",
            "New reconciliation findings by kind (missing, duplicated, never_traced, late).",
            rf + ("kind",),
            registry=registry,
        )
        self.resolved = Counter(
            "syncwatch_reconcile_resolved",
            "Open reconciliation findings that no longer hold (the order arrived, the duplicate was cleaned "
            "up, a late span put the ID in the ledger), by kind.",
            rf + ("kind",),
            registry=registry,
        )
        self.dropped = Counter(
            "syncwatch_reconcile_findings_dropped",
            "Findings not stored because max_findings open findings of that kind were already kept.",
            rf + ("kind",),
            registry=registry,
        )
        self.pending = Gauge(
            "syncwatch_reconcile_pending",
            "At the source, not yet at the destination, still within the flow's deadline (last run).",
            rf,
            registry=registry,
        )
        self.source_ids = Counter(
            "syncwatch_reconcile_source_ids",
            "Source records seen for the first time (changed since the previous window ended): the flow's source rate.",
            rf,
            registry=registry,
        )
        self.expected_per_hour = Gauge(
            "syncwatch_reconcile_expected_source_ids_per_hour",
            "Configured minimum of source records per hour now (0 outside the flow's business hours).",
            rf,
            registry=registry,
        )
        self.window_end = Gauge(
            "syncwatch_reconcile_window_end_timestamp_seconds",
            "Unix time up to which the flow has been reconciled.",
            rf,
            registry=registry,
        )

    def forget_gauges(self) -> None:
        """This replica does not lead: no reconciler gauges, so a sum over replicas counts each once."""
        gauges = (self.up, self.duration, self.last_success, self.findings, self.pending)
        for gauge in (*gauges, self.expected_per_hour, self.window_end):
            gauge.clear()

    def register(self, reconciler: str, flows: list[str]) -> None:
        # Series exist from the start, so `up == 0` and increase() work before the first event.
        self.up.labels(reconciler).set(0)
        for reason in REASONS:
            self.errors.labels(reconciler, reason)
        for flow in flows:
            self.source_ids.labels(reconciler, flow)
            self.expected_per_hour.labels(reconciler, flow).set(0)
            for side in ("source", "destination"):
                self.rows.labels(reconciler, flow, side)
            for kind in KINDS:
                self.findings.labels(reconciler, flow, kind).set(0)
                self.found.labels(reconciler, flow, kind)
                self.resolved.labels(reconciler, flow, kind)
                self.dropped.labels(reconciler, flow, kind)
