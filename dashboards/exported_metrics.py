"""The metric names syncwatch exports, as Prometheus serves them (from SPEC.md's Metrics section,
plus those in BEYOND_SPEC, which README.md names and docs/reference.md lists).

Dashboards and alert rules may only query these; the tests check every expression against this
list, this list minus BEYOND_SPEC against SPEC.md, and BEYOND_SPEC against README.md.
prometheus-client appends `_total` to counters, and a histogram `x` is served as `x_bucket`,
`x_sum` and `x_count`.
"""

from __future__ import annotations

COUNTERS = (
    "syncwatch_collector_errors_total",
    "syncwatch_transactions_total",
    "syncwatch_duplicate_applies_total",
    "syncwatch_attempts_total",
    "syncwatch_retries_total",
    "syncwatch_spans_total",
    "syncwatch_snapshots_total",
    "syncwatch_snapshot_redactions_total",
    "syncwatch_otlp_requests_total",
    "syncwatch_dropped_total",
    "syncwatch_snapshot_truncated_total",
    "syncwatch_reconciler_errors_total",
    "syncwatch_reconciler_rows_read_total",
    "syncwatch_reconcile_found_total",
    "syncwatch_reconcile_resolved_total",
    "syncwatch_reconcile_findings_dropped_total",
    "syncwatch_reconcile_source_ids_total",
    "syncwatch_audit_writes_total",
    "syncwatch_audit_conflicts_total",
    "syncwatch_audit_violations_total",
    "syncwatch_audit_idempotency_key_reuse_total",
    "syncwatch_audit_duplicate_records_total",
    "syncwatch_leader_changes_total",
)

GAUGES = (
    "syncwatch_queue_messages",
    "syncwatch_queue_messages_in_flight",
    "syncwatch_queue_messages_delayed",
    "syncwatch_queue_oldest_message_age_seconds",
    "syncwatch_dlq_messages",
    "syncwatch_collector_up",
    "syncwatch_collector_sample_duration_seconds",
    "syncwatch_collector_interval_seconds",
    "syncwatch_collector_last_success_timestamp_seconds",
    "syncwatch_transactions_pending",
    "syncwatch_transactions_overdue",
    "syncwatch_flow_deadline_seconds",
    "syncwatch_retry_jitter_ratio",
    "syncwatch_snapshot_store_bytes",
    "syncwatch_snapshot_oldest_age_seconds",
    "syncwatch_snapshot_retention_seconds",
    "syncwatch_snapshot_store_up",
    "syncwatch_build_info",
    "syncwatch_reconciler_up",
    "syncwatch_reconciler_run_duration_seconds",
    "syncwatch_reconciler_last_success_timestamp_seconds",
    "syncwatch_reconcile_findings",
    "syncwatch_reconcile_pending",
    "syncwatch_reconcile_expected_source_ids_per_hour",
    "syncwatch_reconcile_window_end_timestamp_seconds",
    "syncwatch_leader",
    "syncwatch_handoff_backlog_spans",
)

HISTOGRAMS = (
    "syncwatch_sync_lag_seconds",
    "syncwatch_delivery_attempts",
    "syncwatch_retry_backoff_seconds",
)

# Listed above but not in SPEC.md: named in README.md (and listed in docs/reference.md).
BEYOND_SPEC = (
    "syncwatch_snapshot_store_up",
    "syncwatch_snapshot_truncated_total",
    # Reconciliation against the systems of record (issue 14).
    "syncwatch_reconciler_up",
    "syncwatch_reconciler_errors_total",
    "syncwatch_reconciler_run_duration_seconds",
    "syncwatch_reconciler_last_success_timestamp_seconds",
    "syncwatch_reconciler_rows_read_total",
    "syncwatch_reconcile_findings",
    "syncwatch_reconcile_found_total",
    "syncwatch_reconcile_resolved_total",
    "syncwatch_reconcile_findings_dropped_total",
    "syncwatch_reconcile_pending",
    "syncwatch_reconcile_source_ids_total",
    "syncwatch_reconcile_expected_source_ids_per_hour",
    "syncwatch_reconcile_window_end_timestamp_seconds",
    "syncwatch_audit_writes_total",
    "syncwatch_audit_conflicts_total",
    "syncwatch_audit_violations_total",
    "syncwatch_audit_idempotency_key_reuse_total",
    "syncwatch_audit_duplicate_records_total",
    # Several replicas on one PostgreSQL ledger (issue 16): REPLICA_METRICS.
    "syncwatch_leader",
    "syncwatch_leader_changes_total",
    "syncwatch_handoff_backlog_spans",
)

# Registered by the replica coordination of issue 16 (leader lease and span handoff).
REPLICA_METRICS = ("syncwatch_leader", "syncwatch_leader_changes_total", "syncwatch_handoff_backlog_spans")

# Several replicas on one PostgreSQL ledger (issue 16): how each gauge behaves across replicas.
# Whole-ledger gauges come from the lease holder only and move with the lease; dashboards and
# rules take the max over replicas (a sum counts the old and the new leader while both are
# scraped). Per-replica gauges are exported by every replica: max/min/count, never sum; except
# syncwatch_leader, whose sum is the number of leaders.
# Counters (those of the lease holder's reconcilers and collectors too) are summed over replicas,
# sum(rate()) or sum(increase()): each replica counts only what it did itself.
LEADER_GAUGES = (
    "syncwatch_queue_messages",
    "syncwatch_queue_messages_in_flight",
    "syncwatch_queue_messages_delayed",
    "syncwatch_queue_oldest_message_age_seconds",
    "syncwatch_dlq_messages",
    "syncwatch_collector_up",
    "syncwatch_collector_sample_duration_seconds",
    "syncwatch_collector_interval_seconds",
    "syncwatch_collector_last_success_timestamp_seconds",
    "syncwatch_transactions_pending",
    "syncwatch_transactions_overdue",
    "syncwatch_retry_jitter_ratio",
    "syncwatch_reconciler_up",
    "syncwatch_reconciler_run_duration_seconds",
    "syncwatch_reconciler_last_success_timestamp_seconds",
    "syncwatch_reconcile_findings",
    "syncwatch_reconcile_pending",
    "syncwatch_reconcile_expected_source_ids_per_hour",
    "syncwatch_reconcile_window_end_timestamp_seconds",
    "syncwatch_handoff_backlog_spans",
)
PER_REPLICA_GAUGES = (
    "syncwatch_flow_deadline_seconds",
    "syncwatch_build_info",
    "syncwatch_snapshot_store_bytes",
    "syncwatch_snapshot_oldest_age_seconds",
    "syncwatch_snapshot_retention_seconds",
    "syncwatch_snapshot_store_up",
    "syncwatch_leader",
)

# Prometheus' own series about the scrape target.
SCRAPE_SERIES = ("up",)


def exported_series() -> frozenset[str]:
    """Every series name a query may select."""
    names = set(COUNTERS) | set(GAUGES) | set(SCRAPE_SERIES)
    for h in HISTOGRAMS:
        names.update((f"{h}_bucket", f"{h}_sum", f"{h}_count"))
    return frozenset(names)


def base_names() -> frozenset[str]:
    """Every listed name (counters with `_total`, histograms without suffix)."""
    return frozenset(COUNTERS + GAUGES + HISTOGRAMS)


def spec_base_names() -> frozenset[str]:
    """The names as SPEC.md writes them (counters with `_total`, histograms without suffix):
    everything listed except BEYOND_SPEC."""
    return base_names() - frozenset(BEYOND_SPEC)
