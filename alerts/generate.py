"""Generate alerts/syncwatch-rules.yml, the Prometheus rule file for syncwatch.

Every threshold and `for` duration lives in `Settings` below, so changing one is a one-line edit
(or a command-line flag) followed by a regeneration:

    python alerts/generate.py                                  # rewrite alerts/syncwatch-rules.yml
    python alerts/generate.py --set lag_for=15m --set syncwatch_job=my-sidecar
    python alerts/generate.py --grafana-url https://grafana.acme.io \
        --runbook-url https://git.acme.io/ops/syncwatch/blob/main/docs/runbooks.md
    python alerts/generate.py --check                          # exit 1 if the committed file differs
    python alerts/generate.py --ui-url https://syncwatch.acme.io   # add ui_url: the web view's list of what fired

The tests fail when the committed file differs from what this code generates with the defaults.
Over 400 lines on purpose: every rule with its expression, thresholds and annotations in one
place, in the order of the rule file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "syncwatch-rules.yml"

# Dashboard uids (dashboards/generate.py uses the same constants).
ERP_DASHBOARD_UID = "syncwatch-erp-health"
SELF_DASHBOARD_UID = "syncwatch-self"

DEFAULT_GRAFANA_URL = "https://grafana.example"
DEFAULT_RUNBOOK_URL = "https://github.com/example/syncwatch/blob/main/docs/runbooks.md"


@dataclasses.dataclass
class Settings:
    # Dead-letter queues page at any depth above this (the problem statement: above zero).
    dlq_threshold: float = 0
    dlq_for: str = "0s"
    # The paging queue rules are evaluated more often than the global evaluation_interval: with
    # 10s sampling and 10s scrapes this keeps dead-letter-to-page under 30s.
    queue_rules_interval: str = "5s"
    # A queue whose depth rose and has not come back down within this window is not draining.
    queue_window: str = "5m"
    queue_min_depth: float = 0
    queue_for: str = "0s"
    # Anything open past its flow's deadline pages.
    overdue_threshold: float = 0
    overdue_for: str = "0s"
    # p95 sync lag against syncwatch_flow_deadline_seconds (1.0 = the deadline itself).
    lag_deadline_ratio: float = 1.0
    lag_for: str = "10m"
    # Lag creeping up over days: the 1h p95's trend over `lag_trend_window` crosses the deadline
    # within `lag_trend_horizon`.
    lag_trend_window: str = "3d"
    lag_trend_horizon_seconds: int = 3 * 86400
    lag_trend_for: str = "1h"
    # Transactions the integration gave up on (failed / dead-lettered) in this window.
    retries_exhausted_window: str = "15m"
    retries_exhausted_for: str = "0s"
    # Fixed-interval retries: jitter ratio below this while retries happen.
    retry_storm_jitter_ratio: float = 0.1
    retry_storm_for: str = "10m"
    # Any duplicate apply in this window.
    duplicate_window: str = "15m"
    duplicate_for: str = "0s"
    # Share of spans that carry a correlation ID.
    correlation_min_ratio: float = 0.95
    correlation_for: str = "15m"
    # A collector is down when it says so or has not succeeded for this many of its intervals.
    collector_stale_intervals: float = 3
    collector_for: str = "2m"
    # The snapshot store is failing: it reports down, or dropped snapshots for one of these
    # syncwatch_dropped_total reasons (exporter/snapshots/store.py) within the window.
    snapshot_store_reasons: str = "snapshot_store_.*"
    snapshot_window: str = "10m"
    snapshot_for: str = "5m"
    dropping_window: str = "5m"
    dropping_for: str = "0s"
    # Reconciliation (syncwatch.reconcile): any open missing or duplicated finding pages.
    reconcile_missing_for: str = "0s"
    reconcile_duplicated_for: str = "0s"
    # A flow gone quiet: no new source records in `quiet_window` while the same hour last week had at
    # least `quiet_last_week_min`, or fewer than the configured minimum within business hours.
    quiet_window: str = "1h"
    quiet_last_week_min: float = 10
    quiet_for: str = "15m"
    reconciler_down_for: str = "10m"
    # Prometheus job label of the sidecar's scrape config.
    syncwatch_job: str = "syncwatch"
    down_for: str = "1m"
    # Several replicas on one PostgreSQL ledger (issue 16). The labels that tell replicas of one
    # syncwatch apart: aggregations drop them and keep every other target label, so independent
    # syncwatch deployments scraped under one job stay apart if a target label (the chart's
    # `ledger` in sidecar mode) tells them apart. Add e.g. `node` if your scrape config sets it.
    replica_labels: str = "instance, pod"
    # Whole-ledger gauges (overdue, pending, queue and DLQ depths, collector and reconciler
    # metrics) come from the leader only, and move to another replica when the lease does. A
    # replica's last value still counts for this long after it stopped exporting the series: it
    # bridges the gap until the new leader's first scrape (keep it above lease period + scrape
    # interval). The rules take the max over replicas, never the sum.
    handover_window: str = "2m"
    # No replica holds the lease while replicas are scraped: nothing tracks deadlines.
    no_leader_for: str = "1m"
    # Two replicas claim the lease for longer than a lease period plus a scrape interval.
    several_leaders_for: str = "2m"
    # Spans handed to the leader and not yet taken in: above `handoff_backlog_high`, or above
    # `handoff_backlog_min` and higher than `handoff_backlog_window` ago without ever dropping
    # below the minimum in that window.
    handoff_backlog_high: float = 50000
    handoff_backlog_min: float = 1000
    handoff_backlog_window: str = "10m"
    handoff_backlog_for: str = "5m"


# The web view's page for each alert (`--ui-url`): the list of exactly what fired. Label values
# go through Go's urlquery, so a queue name cannot break out of the query string.
UI_PATHS = {
    "SyncwatchTransactionsOverdue": "/ui/transactions?state=overdue&flow={{ $labels.flow | urlquery }}",
    "SyncwatchSyncLagAboveDeadline": "/ui/transactions?state=overdue&flow={{ $labels.flow | urlquery }}",
    "SyncwatchSyncLagGrowing": "/ui/transactions?state=pending&flow={{ $labels.flow | urlquery }}",
    "SyncwatchRetriesExhausted": "/ui/transactions?state=failed&flow={{ $labels.flow | urlquery }}",
    "SyncwatchRetryStormRisk": "/ui/transactions?state=overdue&flow={{ $labels.flow | urlquery }}",
    "SyncwatchDuplicateApplies": "/ui/transactions?state=duplicate&flow={{ $labels.flow | urlquery }}",
    "SyncwatchDeadLetterQueueNotEmpty": "/ui/dead-letters?queue={{ $labels.queue | urlquery }}",
    "SyncwatchQueueNotDraining": "/ui/queues",
}


def _anchor(alert: str) -> str:
    # GitHub/Markdown heading anchors: the runbook has one `## <AlertName>` heading per alert.
    return alert.lower()


class _Rules:
    def __init__(self, s: Settings, grafana_url: str, runbook_url: str, ui_url: str | None = None):
        self.s = s
        self.ui_url = ui_url.rstrip("/") if ui_url else None
        self.grafana_url = grafana_url.rstrip("/")
        self.runbook_url = runbook_url

    def across_replicas(self, selector: str) -> str:
        """A leader-only gauge as one series per ledger: the max over replicas of each replica's
        last value within the handover window (a sum would count the old and the new leader)."""
        return f"max without ({self.s.replica_labels}) (last_over_time({selector}[{self.s.handover_window}]))"

    def dashboard(self, uid: str, **var_labels: str) -> str:
        # var_labels: dashboard variable -> alert label; carried into the link so the dashboard
        # opens filtered to what fired.
        query = "&".join(f"var-{var}={{{{ $labels.{label} }}}}" for var, label in var_labels.items())
        return f"{self.grafana_url}/d/{uid}" + (f"?{query}" if query else "")

    def alert(
        self,
        name: str,
        expr: str,
        for_: str,
        severity: str,
        summary: str,
        description: str,
        dashboard_url: str,
        labels: dict | None = None,
    ) -> dict:
        rule = {"alert": name, "expr": _clean(expr)}
        if for_ not in ("0s", "0m", ""):
            rule["for"] = for_
        rule["labels"] = {"severity": severity, **(labels or {})}
        rule["annotations"] = {
            "summary": summary,
            "description": " ".join(description.split()),
            "runbook_url": f"{self.runbook_url}#{_anchor(name)}",
            "dashboard_url": dashboard_url,
        }
        if self.ui_url and name in UI_PATHS:
            rule["annotations"]["ui_url"] = self.ui_url + UI_PATHS[name]
        return rule


def _clean(expr: str) -> str:
    return "\n".join(line.rstrip() for line in expr.strip().splitlines())


def _num(x: float) -> str:
    return f"{x:g}"


def build_rules(
    s: Settings | None = None,
    grafana_url: str = DEFAULT_GRAFANA_URL,
    runbook_url: str = DEFAULT_RUNBOOK_URL,
    ui_url: str | None = None,
) -> dict:
    s = s or Settings()
    r = _Rules(s, grafana_url, runbook_url, ui_url)
    erp = ERP_DASHBOARD_UID
    recording = [
        # p95 sync lag per flow/route; used by the lag alerts and the dashboard.
        {
            "record": "syncwatch:sync_lag_seconds:p95_rate5m",
            "expr": "histogram_quantile(0.95, sum by (job, flow, source, destination, le) (rate(syncwatch_sync_lag_seconds_bucket[5m])))",
        },
        {
            "record": "syncwatch:sync_lag_seconds:p95_rate1h",
            "expr": "histogram_quantile(0.95, sum by (job, flow, source, destination, le) (rate(syncwatch_sync_lag_seconds_bucket[1h])))",
        },
        # One deadline per job and flow, to compare lag against.
        {
            "record": "syncwatch:flow_deadline_seconds:max",
            "expr": "max by (job, flow) (syncwatch_flow_deadline_seconds)",
        },
        {
            "record": "syncwatch:spans:correlated_ratio_rate15m",
            "expr": _clean("""
sum by (job) (rate(syncwatch_spans_total{result="correlated"}[15m]))
/
sum by (job) (rate(syncwatch_spans_total[15m]))"""),
        },
        {
            "record": "syncwatch:retries:rate15m",
            "expr": "sum by (job, flow, destination) (rate(syncwatch_retries_total[15m]))",
        },
    ]

    queues = [
        # A leader-only gauge as one series per ledger, whichever replica holds the lease (see
        # Settings.handover_window). Recorded in the group of the alert that reads it: rules of one
        # group run in order, so the alert sees this evaluation's value.
        {
            "record": "syncwatch:queue_messages:max",
            "expr": r.across_replicas("syncwatch_queue_messages"),
        },
        r.alert(
            "SyncwatchDeadLetterQueueNotEmpty",
            f"{r.across_replicas('syncwatch_dlq_messages')} > {_num(s.dlq_threshold)}",
            s.dlq_for,
            "critical",
            "Dead-letter queue {{ $labels.queue }} holds {{ $value }} message(s)",
            """{{ $labels.broker }} dead-letter queue {{ $labels.queue }} (namespace {{ $labels.namespace }})
            holds {{ $value }} message(s) that failed out of {{ $labels.source_queue }}. Each one is a
            record the destination never received: nobody retries it on its own.""",
            r.dashboard(erp, broker="broker", queue="source_queue"),
        ),
        r.alert(
            "SyncwatchQueueNotDraining",
            f"""
syncwatch:queue_messages:max >= syncwatch:queue_messages:max offset {s.queue_window}
and
min_over_time(syncwatch:queue_messages:max[{s.queue_window}]) > {_num(s.queue_min_depth)}""",
            s.queue_for,
            "warning",
            "Queue {{ $labels.queue }} has not drained for " + s.queue_window,
            f"""{{{{ $labels.broker }}}} queue {{{{ $labels.queue }}}} (namespace {{{{ $labels.namespace }}}})
            rose and has not come back down for {s.queue_window}: now {{{{ $value }}}} message(s),
            never below the level of {s.queue_window} ago. The consumer is stopped, too slow, or
            blocked by a rate-limited destination.""",
            r.dashboard(erp, broker="broker", queue="queue"),
        ),
    ]

    transactions = [
        r.alert(
            "SyncwatchTransactionsOverdue",
            f"{r.across_replicas('syncwatch_transactions_overdue')} > {_num(s.overdue_threshold)}",
            s.overdue_for,
            "critical",
            "{{ $value }} {{ $labels.flow }} transaction(s) to {{ $labels.destination }} are past their deadline",
            """{{ $value }} {{ $labels.flow }} record(s) sent from {{ $labels.source }} to
            {{ $labels.destination }} have no confirmation and are past the flow's deadline: sent and
            never acknowledged, the silent-loss case.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchSyncLagAboveDeadline",
            f"""
syncwatch:sync_lag_seconds:p95_rate5m
  > on (job, flow) group_left ()
({_num(s.lag_deadline_ratio)} * syncwatch:flow_deadline_seconds:max)""",
            s.lag_for,
            "warning",
            "{{ $labels.flow }} sync lag to {{ $labels.destination }} is above the flow's deadline",
            """p95 sync lag of {{ $labels.flow }} from {{ $labels.source }} to {{ $labels.destination }}
            is {{ $value | humanizeDuration }}, above the flow's deadline (syncwatch_flow_deadline_seconds).
            Records arrive, but later than the business expects.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchSyncLagGrowing",
            f"""
predict_linear(syncwatch:sync_lag_seconds:p95_rate1h[{s.lag_trend_window}], {s.lag_trend_horizon_seconds})
  > on (job, flow) group_left ()
syncwatch:flow_deadline_seconds:max
and
deriv(syncwatch:sync_lag_seconds:p95_rate1h[{s.lag_trend_window}]) > 0""",
            s.lag_trend_for,
            "warning",
            "{{ $labels.flow }} sync lag to {{ $labels.destination }} is creeping up",
            f"""The hourly p95 sync lag of {{{{ $labels.flow }}}} from {{{{ $labels.source }}}} to
            {{{{ $labels.destination }}}} has been rising over {s.lag_trend_window}; at this trend it
            reaches the flow's deadline within {s.lag_trend_horizon_seconds // 3600}h
            (projected {{{{ $value | humanizeDuration }}}}).""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchRetriesExhausted",
            f"""sum by (job, flow, source, destination) (increase(syncwatch_transactions_total{{outcome="failed"}}[{s.retries_exhausted_window}])) > 0""",
            s.retries_exhausted_for,
            "warning",
            "{{ $labels.flow }} transactions to {{ $labels.destination }} failed after their retries",
            f"""{{{{ $value | printf "%.0f" }}}} {{{{ $labels.flow }}}} transaction(s) from {{{{ $labels.source }}}}
            to {{{{ $labels.destination }}}} failed in the last {s.retries_exhausted_window}: the
            integration gave up (retries exhausted or dead-lettered).""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchRetryStormRisk",
            f"""
{r.across_replicas("syncwatch_retry_jitter_ratio")} < {_num(s.retry_storm_jitter_ratio)}
and on (job, flow, destination)
syncwatch:retries:rate15m > 0""",
            s.retry_storm_for,
            "warning",
            "{{ $labels.flow }} retries to {{ $labels.destination }} run at fixed intervals",
            """Retries of {{ $labels.flow }} to {{ $labels.destination }} are spaced almost exactly
            alike (jitter ratio {{ $value }}): every client retries in lockstep, which turns a
            rate-limited or recovering ERP into a retry storm.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchDuplicateApplies",
            f"""sum by (job, flow, destination) (increase(syncwatch_duplicate_applies_total[{s.duplicate_window}])) > 0""",
            s.duplicate_for,
            "warning",
            "{{ $labels.flow }} operations were applied twice at {{ $labels.destination }}",
            f"""{{{{ $value | printf "%.0f" }}}} {{{{ $labels.flow }}}} operation(s) were confirmed a second
            time at {{{{ $labels.destination }}}} with an idempotency key already applied in the
            last {s.duplicate_window}: double-counted stock or duplicate orders.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchCorrelationCoverageLow",
            f"syncwatch:spans:correlated_ratio_rate15m < {_num(s.correlation_min_ratio)}",
            s.correlation_for,
            "warning",
            "Only {{ $value | humanizePercentage }} of spans carry a correlation ID",
            f"""Of the spans syncwatch received in 15m, {{{{ $value | humanizePercentage }}}} carry a
            correlation ID (want {_num(s.correlation_min_ratio * 100)}%). Uncorrelated spans cannot
            be followed from source to destination, so lost records go unnoticed.""",
            r.dashboard(erp),
        ),
    ]

    itself = [
        r.alert(
            "SyncwatchCollectorDown",
            # Each replica's own figures are compared (on instance), then one series per ledger.
            f"""
max without ({s.replica_labels}) (
  last_over_time(syncwatch_collector_up[{s.handover_window}]) == 0
  or
  (time() - syncwatch_collector_last_success_timestamp_seconds)
    > on (job, instance, collector)
  ({_num(s.collector_stale_intervals)} * syncwatch_collector_interval_seconds)
)""",
            s.collector_for,
            "critical",
            "syncwatch collector {{ $labels.collector }} is not sampling its broker",
            f"""Collector {{{{ $labels.collector }}}} failed its last sample or has not succeeded for
            {_num(s.collector_stale_intervals)} of its intervals. Queue and DLQ depths from it are
            missing or stale, so the DLQ page cannot fire.""",
            r.dashboard(SELF_DASHBOARD_UID, collector="collector"),
        ),
        r.alert(
            "SyncwatchSnapshotStoreFailing",
            # The store's own failures only: a failed write or open (store_up 0) or snapshots
            # dropped for a snapshot_store_* reason. Payloads the integration sent wrongly
            # (snapshot_uncorrelated, snapshot_invalid_direction) are not the store's fault.
            # Left of `or` first, so $value is the store-failure drop count (0 when none).
            f"""
sum by (job, instance) (increase(syncwatch_dropped_total{{reason=~"{s.snapshot_store_reasons}"}}[{s.snapshot_window}])) > 0
or
min by (job, instance) (syncwatch_snapshot_store_up) == 0""",
            s.snapshot_for,
            "warning",
            "syncwatch's payload snapshot store is failing",
            f"""The payload snapshot store is failing (its last write or open failed, or it refused
            writes: full, unavailable or erroring). {{{{ $value | printf "%.0f" }}}} snapshot(s) were
            dropped for that in the last {s.snapshot_window}, and more are dropped while it stays
            down. Request and response bodies of those attempts will be missing when someone investigates.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
        r.alert(
            "SyncwatchDroppingData",
            f"""sum by (job, instance, reason) (increase(syncwatch_dropped_total[{s.dropping_window}])) > 0""",
            s.dropping_for,
            "critical",
            "syncwatch dropped data ({{ $labels.reason }})",
            f"""syncwatch lost or refused {{{{ $value | printf "%.0f" }}}} item(s) for reason
            {{{{ $labels.reason }}}} in the last {s.dropping_window}. Its own view of the
            integration now has holes.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
        r.alert(
            "SyncwatchDown",
            f"""
max without ({s.replica_labels}) (up{{job="{s.syncwatch_job}"}}) == 0
or
absent(up{{job="{s.syncwatch_job}"}})""",
            s.down_for,
            "critical",
            "syncwatch is down or not scraped",
            f"""Prometheus cannot scrape syncwatch (job {s.syncwatch_job}): not one of its replicas
            answers. While it is down no integration alert (DLQ, overdue, lag) can fire.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
    ]

    reconcile = [
        r.alert(
            "SyncwatchReconcileMissing",
            f"""{r.across_replicas('syncwatch_reconcile_findings{kind="missing"}')} > 0""",
            s.reconcile_missing_for,
            "critical",
            "{{ $value }} {{ $labels.flow }} record(s) never reached the destination",
            """Reconciler {{ $labels.reconciler }} found {{ $value }} {{ $labels.flow }} record(s) in the
            source database, older than the flow's deadline, with no record at the destination: lost,
            whether or not the integration traced them.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchReconcileDuplicated",
            f"""{r.across_replicas('syncwatch_reconcile_findings{kind="duplicated"}')} > 0""",
            s.reconcile_duplicated_for,
            "critical",
            "{{ $value }} {{ $labels.flow }} record(s) exist twice at the destination",
            """Reconciler {{ $labels.reconciler }} found {{ $value }} {{ $labels.flow }} source ID(s) with
            several destination records: the same external order ID under different internal record IDs.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchFlowQuiet",
            f"""
(
  sum by (job, reconciler, flow) (increase(syncwatch_reconcile_source_ids_total[{s.quiet_window}])) == 0
  and
  sum by (job, reconciler, flow) (increase(syncwatch_reconcile_source_ids_total[{s.quiet_window}] offset 1w)) >= {_num(s.quiet_last_week_min)}
  or
  sum by (job, reconciler, flow) (increase(syncwatch_reconcile_source_ids_total[{s.quiet_window}]))
    < max by (job, reconciler, flow) (syncwatch_reconcile_expected_source_ids_per_hour)
)
unless on (job, reconciler)
max by (job, reconciler) (last_over_time(syncwatch_reconciler_up[{s.handover_window}]) == 0)""",
            s.quiet_for,
            "critical",
            "{{ $labels.flow }} has gone quiet at the source",
            f"""Only {{{{ $value | printf "%.0f" }}}} new {{{{ $labels.flow }}}} record(s) appeared in the
            source database in the last {s.quiet_window} (reconciler {{{{ $labels.reconciler }}}}), below
            what is normal for this hour (the same hour last week, or the configured minimum). Nothing
            is ever overdue when nothing is sent: a webhook that stopped firing looks like this.""",
            r.dashboard(erp, flow="flow"),
        ),
        r.alert(
            "SyncwatchReconcilerDown",
            f"{r.across_replicas('syncwatch_reconciler_up')} == 0",
            s.reconciler_down_for,
            "warning",
            "syncwatch reconciler {{ $labels.reconciler }} cannot read its databases",
            """Reconciler {{ $labels.reconciler }} failed its last run (see
            syncwatch_reconciler_errors_total by reason). Missing and duplicated records are not being
            looked for, and the quiet-flow alert is held back for it.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
    ]

    # Payload audits (issue 15): what the seed's root causes look like while they happen.
    audits = [
        r.alert(
            "SyncwatchFieldOwnershipViolation",
            "sum by (job, flow, field, writer) (increase(syncwatch_audit_violations_total[1h])) > 0",
            "0m",
            "warning",
            "{{ $labels.writer }} changed {{ $labels.flow }} field {{ $labels.field }}, which it does not own",
            """{{ $value | printf "%.0f" }} write(s) in the last hour by {{ $labels.writer }} changed the
            {{ $labels.flow }} field {{ $labels.field }} while another system owns it (audit.flows
            ownership map): the old-address-overwrites-the-new case.""",
            r.dashboard(ERP_DASHBOARD_UID, flow="flow"),
        ),
        r.alert(
            "SyncwatchWriteConflicts",
            "sum by (job, flow, field) (increase(syncwatch_audit_conflicts_total[1h])) > 0",
            "0m",
            "warning",
            "Two systems changed {{ $labels.flow }} field {{ $labels.field }} within one sync window",
            """{{ $value | printf "%.0f" }} conflict(s) in the last hour: two different systems changed
            the {{ $labels.flow }} field {{ $labels.field }} of the same record within the flow's sync
            window; one of the changes was lost.""",
            r.dashboard(ERP_DASHBOARD_UID, flow="flow"),
        ),
        r.alert(
            "SyncwatchIdempotencyKeyReuse",
            "sum by (job, flow) (increase(syncwatch_audit_idempotency_key_reuse_total[1h])) > 0",
            "0m",
            "warning",
            "{{ $labels.flow }}: an idempotency key was reused with a different payload",
            """{{ $value | printf "%.0f" }} request(s) in the last hour reused an idempotency key of the
            {{ $labels.flow }} flow with a different body: a retry that is not a retry, which the
            destination will either drop or apply twice.""",
            r.dashboard(ERP_DASHBOARD_UID, flow="flow"),
        ),
        r.alert(
            "SyncwatchDuplicateDestinationRecords",
            "sum by (job, flow) (increase(syncwatch_audit_duplicate_records_total[1h])) > 0",
            "0m",
            "critical",
            "{{ $labels.flow }}: one change was confirmed into two destination records",
            """{{ $value | printf "%.0f" }} correlation ID(s) of the {{ $labels.flow }} flow were
            confirmed into a second, different destination record ID in the last hour: a duplicate
            record (e.g. a duplicate order in the ERP).""",
            r.dashboard(ERP_DASHBOARD_UID, flow="flow"),
        ),
    ]

    # Replicas on one PostgreSQL ledger (issue 16): one leader runs what must run once.
    replicas = [
        {
            "record": "syncwatch:handoff_backlog_spans:max",
            "expr": r.across_replicas("syncwatch_handoff_backlog_spans"),
        },
        r.alert(
            "SyncwatchNoLeader",
            f"sum without ({s.replica_labels}) (syncwatch_leader) == 0",
            s.no_leader_for,
            "critical",
            "No syncwatch replica holds the leader lease",
            f"""syncwatch replicas are scraped, but none of them has held the leader lease in
            PostgreSQL for {s.no_leader_for}. Nothing marks transactions overdue, expires them, samples
            the brokers or runs the reconcilers: the overdue, DLQ and reconciliation alerts cannot fire.
            Spans are still accepted and handed off.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
        r.alert(
            "SyncwatchSeveralLeaders",
            f"sum without ({s.replica_labels}) (syncwatch_leader) > 1",
            s.several_leaders_for,
            "warning",
            "{{ $value }} syncwatch replicas claim the leader lease",
            f"""{{{{ $value }}}} replicas of job {{{{ $labels.job }}}} have reported syncwatch_leader 1 for
            {s.several_leaders_for}, longer than a lease takes to change hands. Either two separate
            syncwatch deployments (each with its own ledger) are scraped as one, or replicas disagree
            about the lease: fencing keeps a stale leader from writing, but check it.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
        r.alert(
            "SyncwatchHandoffBacklog",
            f"""
syncwatch:handoff_backlog_spans:max > {_num(s.handoff_backlog_high)}
or
(
  syncwatch:handoff_backlog_spans:max > syncwatch:handoff_backlog_spans:max offset {s.handoff_backlog_window}
  and
  min_over_time(syncwatch:handoff_backlog_spans:max[{s.handoff_backlog_window}]) > {_num(s.handoff_backlog_min)}
)""",
            s.handoff_backlog_for,
            "warning",
            "The syncwatch leader falls behind: {{ $value }} spans wait for it",
            f"""{{{{ $value | printf "%.0f" }}}} spans that followers handed to the leader are waiting to
            be taken in: above {_num(s.handoff_backlog_high)}, or above {_num(s.handoff_backlog_min)}
            and growing over {s.handoff_backlog_window}. Transactions they carry are confirmed late
            and may show as overdue although they arrived.""",
            r.dashboard(SELF_DASHBOARD_UID),
        ),
    ]

    return {
        "groups": [
            {"name": "syncwatch-recording", "rules": recording},
            {"name": "syncwatch-queues", "interval": s.queue_rules_interval, "rules": queues},
            {"name": "syncwatch-transactions", "rules": transactions},
            {"name": "syncwatch-itself", "rules": itself},
            {"name": "syncwatch-reconcile", "rules": reconcile},
            {"name": "syncwatch-audits", "rules": audits},
            {"name": "syncwatch-replicas", "rules": replicas},
        ]
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)

HEADER = """\
# Generated by alerts/generate.py; edit the thresholds there (class Settings) and regenerate.
# Recommended Prometheus settings (alerts/prometheus.example.yml): scrape syncwatch every 10s,
# evaluation_interval 10s; the queue rules run every 5s, so a dead-lettered message pages within 30s.
"""


def render(rules: dict) -> str:
    return HEADER + yaml.dump(rules, Dumper=_Dumper, sort_keys=False, width=200, allow_unicode=True)


def alert_names(rules: dict) -> list[str]:
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def _parse_set(values: list[str]) -> Settings:
    s = Settings()
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: expected one of {', '.join(fields)} as key=value")
        current = getattr(s, key)
        setattr(s, key, type(current)(value))
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a Settings field")
    p.add_argument("--grafana-url", default=DEFAULT_GRAFANA_URL)
    p.add_argument("--runbook-url", default=DEFAULT_RUNBOOK_URL)
    p.add_argument("--ui-url", default=None, help="syncwatch's HTTP address: adds a ui_url annotation per alert")
    p.add_argument("--output", type=Path, default=RULES_FILE)
    p.add_argument("--check", action="store_true", help="exit 1 if --output differs from the generated rules")
    a = p.parse_args(argv)
    text = render(build_rules(_parse_set(a.set), a.grafana_url, a.runbook_url, a.ui_url))
    if a.check:
        if not a.output.exists() or a.output.read_text() != text:
            print(f"{a.output} is out of date: run python alerts/generate.py", file=sys.stderr)
            return 1
        return 0
    a.output.write_text(text)
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
