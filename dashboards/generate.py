"""Generate syncwatch's Grafana dashboards with grafana-foundation-sdk (Grafana's own SDK).

    python dashboards/generate.py           # rewrite dashboards/*.json
    python dashboards/generate.py --check   # exit 1 if a committed JSON differs from the code

Two dashboards, stable uids (alert rules link to them, see alerts/generate.py):
- `syncwatch-erp-health` "ERP integration health": silent loss, then a row per signal.
- `syncwatch-self` "syncwatch health": collectors, OTLP intake, drops, snapshot store, replicas.

Every query uses only metrics syncwatch exports (dashboards/exported_metrics.py; the tests check
it) and every panel has a description saying what a bad value means and where to look next.

Over 400 lines on purpose: one declarative list of panels, read top to bottom in the order the
dashboards show them; split across modules, a row's queries and its descriptions would drift apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import stat as statb
from grafana_foundation_sdk.builders import timeseries as tsb
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

HERE = Path(__file__).resolve().parent
ERP_UID = "syncwatch-erp-health"
SELF_UID = "syncwatch-self"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label filters shared by the panels; `.*` is each variable's "All" value.
JOB = 'job=~"$job"'
FLOW = f'{JOB}, flow=~"$flow"'
QUEUE = f'{JOB}, broker=~"$broker", queue=~"$queue"'
COLLECTOR = f'{JOB}, collector=~"$collector"'

# Several replicas on one PostgreSQL ledger (issue 16): the labels that tell replicas apart.
REPLICAS = "instance, pod"


def _ledger(selector: str) -> str:
    """A gauge that only the lease holder exports (overdue, queue depths, collector and reconciler
    metrics) as one series per ledger: when the lease moves, the old and the new leader are both
    scraped for a moment, and a sum would count both. Sum or break it down after this."""
    return f"max without ({REPLICAS}) ({selector})"


@dataclass
class Q:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class P:
    """One panel: kind is `timeseries` or `stat`."""

    title: str
    description: str
    queries: list[Q]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    # (value, color) steps; the first value is None (the base). Drawn as lines on time series.
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    threshold_style: str | None = None
    # Query refIds drawn as a red dashed reference line (deadlines, retention).
    reference_refs: tuple[str, ...] = ()
    min: float | None = 0
    # (title, url) links to syncwatch's web view: panel links, and data links per series (`${__field.labels.x}`).
    links: list[tuple[str, str]] = field(default_factory=list)
    data_links: list[tuple[str, str]] = field(default_factory=list)


# The web view's address, a dashboard variable (set it once per Grafana, e.g. https://syncwatch.acme.io).
UI = "${syncwatch_url}/ui"


def _link(title: str, url: str):
    return db.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url).target_blank(True)


def _ref(i: int) -> str:
    return chr(ord("A") + i)


def _panel(p: P):
    if p.kind == "stat":
        b = (
            statb.Panel()
            .graph_mode(cm.BigValueGraphMode.AREA)
            .color_mode(cm.BigValueColorMode.BACKGROUND)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    else:
        b = (
            tsb.Panel()
            .line_width(1)
            .fill_opacity(10)
            .legend(
                cb.VizLegendOptions()
                .display_mode(cm.LegendDisplayMode.TABLE)
                .placement(cm.LegendPlacement.BOTTOM)
                .show_legend(True)
                .calcs(["lastNotNull", "max"])
            )
        )
        if p.threshold_style:
            b = b.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode(p.threshold_style)))
        for ref in p.reference_refs:
            b = b.override_by_query(
                ref,
                [
                    dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
                    dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                    dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                    dm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
                ],
            )
    b = (
        b.title(p.title)
        .description(" ".join(p.description.split()))
        .datasource(DS)
        .unit(p.unit)
        .span(p.width)
        .height(8)
        .thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in p.thresholds])
        )
    )
    if p.min is not None:
        b = b.min(p.min)
    if p.links:
        b = b.links([_link(t, u) for t, u in p.links])
    if p.data_links:
        b = b.data_links([_link(t, u) for t, u in p.data_links])
    for i, q in enumerate(p.queries):
        t = pb.Dataquery().expr(q.expr).ref_id(_ref(i)).datasource(DS)
        if q.legend:
            t = t.legend_format(q.legend)
        t = t.instant() if q.instant else t.range()
        b = b.with_target(t)
    return b


def _var(name: str, label: str, query: str, description: str):
    return (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DS)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def _datasource_var():
    return (
        db.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes syncwatch.")
    )


def _job_var():
    return _var("job", "Job", "label_values(syncwatch_build_info, job)", "Prometheus job of the syncwatch sidecar(s).")


def _dashboard(uid: str, title: str, description: str, variables: list, rows: list[tuple[str, list[P]]]):
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["syncwatch"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
    )
    for v in variables:
        d = d.with_variable(v)
    d = d.link(
        db.DashboardLink("syncwatch dashboards")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(["syncwatch"])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )
    next_id = 1  # stable ids, in layout order
    for title_, panels in rows:
        d = d.with_row(db.Row(title_).id(next_id))
        next_id += 1
        for p in panels:
            d = d.with_panel(_panel(p).id(next_id))
            next_id += 1
    return d.build()


def _hq(q: float, metric: str, by: str, sel: str, window: str = "$__rate_interval") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{window}])))"


def erp_health():
    lag_p95 = _hq(0.95, "syncwatch_sync_lag_seconds", "flow, destination", FLOW)
    deadline = f"max by (flow) (syncwatch_flow_deadline_seconds{{{FLOW}}})"
    rows = [
        (
            "Silent loss: sent and never confirmed, applied twice",
            [
                P(
                    "Overdue transactions",
                    """Records sent and not confirmed within their flow's deadline, now. Anything above 0
              is a record the destination may never have received (SyncwatchTransactionsOverdue pages).
              Next: the 'Overdue by flow' panel, then GET /api/v1/transactions?state=overdue&flow=...""",
                    [Q(f"sum({_ledger(f'syncwatch_transactions_overdue{{{FLOW}}}')}) or vector(0)")],
                    kind="stat",
                    width=4,
                    thresholds=[(None, "green"), (1, "red")],
                    links=[("Overdue transactions (web view)", f"{UI}/transactions?state=overdue")],
                ),
                P(
                    "Overdue by flow",
                    """Open transactions past the deadline, per flow and destination. A line that keeps
              rising means confirmations stopped for that route: check its queue and DLQ rows and
              open a few with GET /api/v1/transactions/{correlation_id}.""",
                    [
                        Q(
                            f"sum by (flow, source, destination) ({_ledger(f'syncwatch_transactions_overdue{{{FLOW}}}')})",
                            "{{flow}} {{source}} → {{destination}}",
                        )
                    ],
                    width=10,
                    thresholds=[(None, "green"), (1, "red")],
                    threshold_style="line",
                    data_links=[
                        (
                            "Overdue ${__field.labels.flow} transactions",
                            f"{UI}/transactions?state=overdue&flow=${{__field.labels.flow:percentencode}}",
                        )
                    ],
                ),
                P(
                    "Pending (open, within deadline or not)",
                    """Transactions waiting for their confirmation. Normal: a small number that follows
              traffic. Bad: growing while traffic is flat — confirmations are late or lost; compare
              with 'Overdue by flow' and the sync lag row.""",
                    [
                        Q(
                            f"sum by (flow, destination) ({_ledger(f'syncwatch_transactions_pending{{{FLOW}}}')})",
                            "{{flow}} → {{destination}}",
                        )
                    ],
                    width=10,
                ),
                P(
                    "Duplicate applies",
                    """Operations confirmed a second time with an idempotency key already applied (stock
              adjusted twice, duplicate orders). Anything above 0 is bad: check whether a retry after
              a timeout re-sent it, and whether the destination honours idempotency keys.""",
                    [
                        Q(
                            f"sum by (flow, destination) (increase(syncwatch_duplicate_applies_total{{{FLOW}}}[$__rate_interval]))",
                            "{{flow}} → {{destination}}",
                        )
                    ],
                    width=12,
                    thresholds=[(None, "green"), (1, "red")],
                    threshold_style="line",
                ),
                P(
                    "Outcomes",
                    """Finished transactions per second by outcome. `failed` means the integration gave up
              (retries exhausted, dead-lettered); `expired` means never confirmed at all. Both should
              be 0: open them with GET /api/v1/transactions?state=failed.""",
                    [
                        Q(
                            f"sum by (flow, outcome) (rate(syncwatch_transactions_total{{{FLOW}}}[$__rate_interval]))",
                            "{{flow}} {{outcome}}",
                        )
                    ],
                    unit="ops",
                    width=12,
                ),
            ],
        ),
        (
            "1. Correlation coverage",
            [
                P(
                    "Spans carrying a correlation ID",
                    """Share of received spans that carry a correlation ID. Below 95% the uncorrelated part
              of the traffic cannot be followed from source to destination, so losses there go
              unseen. Next: find the emitter without `messaging.message.conversation_id` or add its
              attribute name to correlation.keys.""",
                    [
                        Q(
                            f'sum(rate(syncwatch_spans_total{{{JOB}, result="correlated"}}[$__rate_interval])) / sum(rate(syncwatch_spans_total{{{JOB}}}[$__rate_interval]))',
                            "correlated",
                        )
                    ],
                    unit="percentunit",
                    width=12,
                    thresholds=[(None, "red"), (0.95, "green")],
                    threshold_style="line+area",
                    min=None,
                ),
                P(
                    "Spans by correlation result",
                    """Spans per second: correlated, uncorrelated (no correlation ID) and rejected
              (malformed; also counted as dropped). Rejected above 0 means an emitter sends bad
              data: see the syncwatch health dashboard.""",
                    [Q(f"sum by (result) (rate(syncwatch_spans_total{{{JOB}}}[$__rate_interval]))", "{{result}}")],
                    unit="ops",
                    width=12,
                ),
            ],
        ),
        (
            "2. Queue depth",
            [
                P(
                    "Queue depth",
                    """Visible / ready messages per queue, sampled every 60s (10s in high traffic). A
              depth that rises and does not come back down within 5 minutes is a bottleneck
              (SyncwatchQueueNotDraining): check consumers and the retry row.""",
                    [Q(_ledger(f"syncwatch_queue_messages{{{QUEUE}}}"), "{{broker}} {{namespace}} {{queue}}")],
                    width=12,
                ),
                P(
                    "In flight and delayed",
                    """In flight: received but not yet acknowledged; stuck at the consumer's prefetch limit
              means the consumer hangs on slow destination calls. Delayed: scheduled for later
              (often retries with a delay).""",
                    [
                        Q(_ledger(f"syncwatch_queue_messages_in_flight{{{QUEUE}}}"), "in flight {{queue}}"),
                        Q(_ledger(f"syncwatch_queue_messages_delayed{{{QUEUE}}}"), "delayed {{queue}}"),
                    ],
                    width=12,
                ),
                P(
                    "Oldest message age",
                    """Age of the oldest message, where the broker reports it. Above the flow's deadline
              means records will be overdue even if they are eventually processed.""",
                    [Q(_ledger(f"syncwatch_queue_oldest_message_age_seconds{{{QUEUE}}}"), "{{queue}}")],
                    unit="s",
                    width=12,
                ),
                P(
                    "Sampling interval in force",
                    """Seconds between queue samples per collector: 60 normally, 10 in high-traffic mode.
              A value other than these means the sampling settings were changed.""",
                    [Q(_ledger(f"syncwatch_collector_interval_seconds{{{JOB}}}"), "{{collector}}")],
                    unit="s",
                    width=12,
                ),
            ],
        ),
        (
            "3. Retry state",
            [
                P(
                    "Attempts by response code",
                    """Delivery attempts per second by response code. Rising 429 or 503 means the
              destination rate-limits or is overloaded: retries must back off with jitter. 4xx other
              than 429 will never succeed by retrying: fix the data.""",
                    [
                        Q(
                            f"sum by (status_code) (rate(syncwatch_attempts_total{{{FLOW}}}[$__rate_interval]))",
                            "{{status_code}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                P(
                    "Retries",
                    """Attempts after the first, per second. A rise with 429/5xx is back-pressure from the
              destination; a steady high level is a flow that needs more than one try for most
              records.""",
                    [
                        Q(
                            f"sum by (flow, destination) (rate(syncwatch_retries_total{{{FLOW}}}[$__rate_interval]))",
                            "{{flow}} → {{destination}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                P(
                    "Attempts per finished transaction (p95)",
                    """95th percentile of delivery attempts per finished transaction. Above 3 means most
              records need retries: look at the response codes.""",
                    [
                        Q(
                            _hq(0.95, "syncwatch_delivery_attempts", "flow, destination", FLOW),
                            "{{flow}} → {{destination}}",
                        )
                    ],
                    width=8,
                    thresholds=[(None, "green"), (3, "orange")],
                    threshold_style="dashed",
                ),
                P(
                    "Backoff between attempts",
                    """Time between the end of one attempt and the start of the next: p50 and p95. p50 and
              p95 equal means fixed-interval retries (see the jitter ratio).""",
                    [
                        Q(
                            _hq(0.5, "syncwatch_retry_backoff_seconds", "flow, destination", FLOW),
                            "p50 {{flow}} → {{destination}}",
                        ),
                        Q(
                            _hq(0.95, "syncwatch_retry_backoff_seconds", "flow, destination", FLOW),
                            "p95 {{flow}} → {{destination}}",
                        ),
                    ],
                    unit="s",
                    width=12,
                ),
                P(
                    "Retry jitter ratio",
                    """Coefficient of variation of recent backoffs at the same attempt number. Near 0 (below
              the red line at 0.1) means every client retries in lockstep: the retry-storm pattern
              against a rate-limited ERP (SyncwatchRetryStormRisk). Fix: exponential backoff with
              full jitter.""",
                    [Q(_ledger(f"syncwatch_retry_jitter_ratio{{{FLOW}}}"), "{{flow}} → {{destination}}")],
                    width=12,
                    thresholds=[(None, "red"), (0.1, "green")],
                    threshold_style="line+area",
                ),
            ],
        ),
        (
            "4. Dead-letter queues",
            [
                P(
                    "Messages in dead-letter queues",
                    """All messages in dead-letter queues now. Anything above 0 pages
              (SyncwatchDeadLetterQueueNotEmpty): each is a record nobody will retry. Next: read the
              dead-letter reason in the broker, then the transaction's timeline.""",
                    [Q("sum(" + _ledger(f'syncwatch_dlq_messages{{{JOB}, broker=~"$broker"}}') + ") or vector(0)")],
                    kind="stat",
                    width=4,
                    thresholds=[(None, "green"), (1, "red")],
                    links=[("Dead letters by order (web view)", f"{UI}/dead-letters")],
                ),
                P(
                    "DLQ depth by queue",
                    """Depth of each dead-letter queue, labelled with the queue(s) whose failures land
              there. Above the red line (1) is a page. Replay only after fixing the cause, and only
              with idempotency keys.""",
                    [
                        Q(
                            _ledger(f'syncwatch_dlq_messages{{{JOB}, broker=~"$broker", queue=~"$queue"}}')
                            + " or "
                            + _ledger(f'syncwatch_dlq_messages{{{JOB}, broker=~"$broker", source_queue=~"$queue"}}'),
                            "{{queue}} ← {{source_queue}}",
                        )
                    ],
                    width=20,
                    thresholds=[(None, "green"), (1, "red")],
                    threshold_style="line",
                    data_links=[
                        (
                            "Dead letters of ${__field.labels.queue}",
                            f"{UI}/dead-letters?queue=${{__field.labels.queue:percentencode}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "5. Payload snapshots",
            [
                P(
                    "Snapshots stored and dropped",
                    """Request and response bodies stored per second. `dropped` above 0 means some
              attempts will have no payload to inspect (SyncwatchSnapshotStoreFailing): check the
              store on the syncwatch health dashboard.""",
                    [
                        Q(
                            f"sum by (direction, result) (rate(syncwatch_snapshots_total{{{JOB}}}[$__rate_interval]))",
                            "{{direction}} {{result}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                P(
                    "Oldest snapshot against retention",
                    """Age of the oldest stored snapshot and the retention (red dashed, at least 72h).
              Oldest far above retention: the sweeper is behind and the store grows. Oldest well
              below 72h on a sidecar running longer than that: snapshots are lost early.""",
                    [
                        Q(f"max(syncwatch_snapshot_oldest_age_seconds{{{JOB}}})", "oldest"),
                        Q(f"max(syncwatch_snapshot_retention_seconds{{{JOB}}})", "retention"),
                    ],
                    unit="s",
                    width=8,
                    reference_refs=("B",),
                ),
                P(
                    "Redactions by kind",
                    """Values masked in stored payloads, per second, by kind (card numbers, e-mails,
              IBANs, secrets, configured keys). A drop to 0 while snapshots are stored can mean the
              payload format changed and personal data is no longer caught.""",
                    [
                        Q(
                            f"sum by (kind) (rate(syncwatch_snapshot_redactions_total{{{JOB}}}[$__rate_interval]))",
                            "{{kind}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
            ],
        ),
        (
            "6. Sync lag",
            [
                P(
                    "Sync lag against the deadline",
                    """Time from the change at the source to its confirmation at the destination (p50,
              p95) with the flow's deadline as a red dashed line. p95 above the line means records
              arrive too late (SyncwatchSyncLagAboveDeadline): check queue depth, then retries.""",
                    [
                        Q(
                            _hq(0.5, "syncwatch_sync_lag_seconds", "flow, destination", FLOW),
                            "p50 {{flow}} → {{destination}}",
                        ),
                        Q(lag_p95, "p95 {{flow}} → {{destination}}"),
                        Q(deadline, "deadline {{flow}}"),
                    ],
                    unit="s",
                    width=12,
                    reference_refs=("C",),
                ),
                P(
                    "p95 sync lag as a share of the deadline",
                    """p95 lag divided by the flow's deadline. Above 100% (the red area) the flow misses
              its deadline; a line creeping towards it over days is SyncwatchSyncLagGrowing.""",
                    [Q(f"{lag_p95} / on (flow) group_left () {deadline}", "{{flow}} → {{destination}}")],
                    unit="percentunit",
                    width=12,
                    thresholds=[(None, "green"), (0.8, "orange"), (1, "red")],
                    threshold_style="line+area",
                ),
                P(
                    "Hourly p95 sync lag (trend)",
                    """p95 over a sliding hour: view it over 7 days to see lag creeping up before it
              crosses the deadline. Steps that line up with deploys point at the change.""",
                    [
                        Q(
                            _hq(0.95, "syncwatch_sync_lag_seconds", "flow, destination", FLOW, "1h"),
                            "{{flow}} → {{destination}}",
                        )
                    ],
                    unit="s",
                    width=24,
                ),
            ],
        ),
        (
            "7. Reconciliation against the systems of record",
            [
                P(
                    "Findings in the databases",
                    """What the reconcilers found comparing the source's and the destination's own databases:
              missing (past the deadline, not at the destination) and duplicated (one source ID, several
              destination records) page; late and never traced are recorded. Any missing or duplicated
              above 0 is SyncwatchReconcileMissing / SyncwatchReconcileDuplicated: `syncwatch reconcile
              list --kind missing` gives the IDs.""",
                    [
                        Q(
                            f"sum by (flow, kind) ({_ledger(f'syncwatch_reconcile_findings{{{FLOW}}}')})",
                            "{{flow}} {{kind}}",
                        )
                    ],
                    width=6,
                    thresholds=[(None, "green"), (1, "red")],
                ),
                P(
                    "Missing (databases) vs overdue (spans)",
                    """The two views of loss side by side: missing found in the databases, overdue in the
              ledger, and records never traced at all in the last hour. Missing well above overdue
              means losses the spans cannot see (an instrumentation gap); overdue without missing
              means the records arrived but the confirm span did not.""",
                    [
                        Q(
                            "sum by (flow) ("
                            + _ledger(f'syncwatch_reconcile_findings{{{FLOW}, kind="missing"}}')
                            + ")",
                            "missing {{flow}}",
                        ),
                        Q(
                            f"sum by (flow) ({_ledger(f'syncwatch_transactions_overdue{{{FLOW}}}')})",
                            "overdue {{flow}}",
                        ),
                        Q(
                            f'sum by (flow) (increase(syncwatch_reconcile_found_total{{{FLOW}, kind="never_traced"}}[1h]))',
                            "never traced / h {{flow}}",
                        ),
                    ],
                    width=6,
                ),
                P(
                    "Source records per hour vs last week",
                    """New records at the source per hour, the same hour last week, and the configured
              business-hours minimum (red dashed). A line at 0 where last week was busy is a flow gone
              quiet (SyncwatchFlowQuiet): a webhook that stopped firing, which no overdue count shows.""",
                    [
                        Q(f"sum by (flow) (increase(syncwatch_reconcile_source_ids_total{{{FLOW}}}[1h]))", "{{flow}}"),
                        Q(
                            f"sum by (flow) (increase(syncwatch_reconcile_source_ids_total{{{FLOW}}}[1h] offset 1w))",
                            "{{flow}} last week",
                        ),
                        Q(
                            f"sum by (flow) ({_ledger(f'syncwatch_reconcile_expected_source_ids_per_hour{{{FLOW}}}')})",
                            "{{flow}} minimum",
                        ),
                    ],
                    width=6,
                    reference_refs=("C",),
                ),
                P(
                    "Reconcilers up and errors",
                    """1 when each reconciler's last run read both databases; errors per second by reason
              (unreachable, unauthorized, timeout, query_error, bad_result). A reconciler at 0 looks
              for nothing: SyncwatchReconcilerDown, and its log line names the cause.""",
                    [
                        Q(f"max by (reconciler) (syncwatch_reconciler_up{{{JOB}}})", "up {{reconciler}}"),
                        Q(
                            f"sum by (reconciler, reason) (rate(syncwatch_reconciler_errors_total{{{JOB}}}[$__rate_interval]))",
                            "{{reconciler}} {{reason}}",
                        ),
                    ],
                    width=6,
                ),
                P(
                    "Findings found and resolved per hour",
                    """New findings and findings that cleared (the order arrived, the duplicate was cleaned
              up, a late span put the ID in the ledger), by kind, per hour. Found steadily above
              resolved is a backlog growing; resolved following found within the deadline is a flow
              that is slow, not losing records.""",
                    [
                        Q(
                            f"sum by (flow, kind) (increase(syncwatch_reconcile_found_total{{{FLOW}}}[1h]))",
                            "found {{flow}} {{kind}}",
                        ),
                        Q(
                            f"sum by (flow, kind) (increase(syncwatch_reconcile_resolved_total{{{FLOW}}}[1h]))",
                            "resolved {{flow}} {{kind}}",
                        ),
                    ],
                    width=24,
                ),
            ],
        ),
        (
            "8. Data audits: field ownership and idempotency",
            [
                P(
                    "Ownership violations by field and writer",
                    """Writes changing a field the writer does not own (audit.flows ownership map),
              per hour. Open /api/v1/audit/findings?kind=violation for both writes side by side.""",
                    [
                        Q(
                            f"sum by (flow, field, writer) (increase(syncwatch_audit_violations_total{{{FLOW}}}[1h]))",
                            "{{flow}} {{field}} by {{writer}}",
                        )
                    ],
                ),
                P(
                    "Write conflicts by field",
                    """Two systems changing the same field of the same record within the flow's sync
              window, per hour: one of the two changes was lost.""",
                    [
                        Q(
                            f"sum by (flow, field) (increase(syncwatch_audit_conflicts_total{{{FLOW}}}[1h]))",
                            "{{flow}} {{field}}",
                        )
                    ],
                ),
                P(
                    "Idempotency key reuse and duplicate records",
                    """Retries that are not retries (same idempotency key, different body) and changes
              confirmed into two destination records, per hour.""",
                    [
                        Q(
                            f"sum by (flow) (increase(syncwatch_audit_idempotency_key_reuse_total{{{FLOW}}}[1h]))",
                            "{{flow}} key reuse",
                        ),
                        Q(
                            f"sum by (flow) (increase(syncwatch_audit_duplicate_records_total{{{FLOW}}}[1h]))",
                            "{{flow}} duplicate records",
                        ),
                    ],
                ),
            ],
        ),
    ]
    variables = [
        _datasource_var(),
        _job_var(),
        _var(
            "flow",
            "Flow",
            f"label_values(syncwatch_flow_deadline_seconds{{{JOB}}}, flow)",
            "Data flow (orders, inventory, ...).",
        ),
        _var("broker", "Broker", f"label_values(syncwatch_queue_messages{{{JOB}}}, broker)", "Message broker type."),
        _var(
            "queue",
            "Queue",
            f'label_values(syncwatch_queue_messages{{{JOB}, broker=~"$broker"}}, queue)',
            "Queue (or the source queue of a DLQ).",
        ),
        db.TextBoxVariable("syncwatch_url")
        .label("syncwatch URL")
        .description("Address of syncwatch's HTTP port, for the links to its web view (the stuck orders themselves).")
        .default_value("http://syncwatch:9873"),
    ]
    return _dashboard(
        ERP_UID,
        "ERP integration health",
        "syncwatch: the six signals of a storefront / WMS / ERP integration and its silent losses.",
        variables,
        rows,
    )


def self_health():
    rows = [
        (
            "Collectors",
            [
                P(
                    "Collector up",
                    """1 when the collector's last broker sample succeeded. 0 means queue and DLQ depths
              from that broker are stale and the DLQ page cannot fire (SyncwatchCollectorDown):
              check the error reasons next to it.""",
                    [Q(_ledger(f"syncwatch_collector_up{{{COLLECTOR}}}"), "{{collector}}")],
                    width=8,
                    thresholds=[(None, "red"), (1, "green")],
                    threshold_style="line",
                    min=None,
                ),
                P(
                    "Collector errors by reason",
                    """Failed broker API calls per second. `unauthorized`: credentials; `unreachable` /
              `timeout`: network; `throttled`: the broker API's rate limit (raise the interval);
              `not_found`: the queue selection.""",
                    [
                        Q(
                            f"sum by (collector, reason) (rate(syncwatch_collector_errors_total{{{COLLECTOR}}}[$__rate_interval]))",
                            "{{collector}} {{reason}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                P(
                    "Seconds since last successful sample",
                    """Should stay below the sampling interval. Above 3 intervals the collector counts as
              down even if it still says up.""",
                    [
                        Q(
                            "time() - " + _ledger(f"syncwatch_collector_last_success_timestamp_seconds{{{COLLECTOR}}}"),
                            "{{collector}}",
                        ),
                        Q(
                            "3 * " + _ledger(f"syncwatch_collector_interval_seconds{{{COLLECTOR}}}"),
                            "3 intervals {{collector}}",
                        ),
                    ],
                    unit="s",
                    width=8,
                    reference_refs=("B",),
                ),
                P(
                    "Sample duration",
                    """Time one sample of all selected queues took. Approaching the interval means the
              collector cannot keep up: select fewer queues or raise the interval.""",
                    [Q(_ledger(f"syncwatch_collector_sample_duration_seconds{{{COLLECTOR}}}"), "{{collector}}")],
                    unit="s",
                    width=12,
                ),
                P(
                    "Sampling interval",
                    """Interval in force: 60s normally, 10s in high-traffic mode. Stuck at 10s outside busy
              hours means the fast-mode trigger is too sensitive and the broker API is called 6x as often.""",
                    [Q(_ledger(f"syncwatch_collector_interval_seconds{{{COLLECTOR}}}"), "{{collector}}")],
                    unit="s",
                    width=12,
                ),
            ],
        ),
        (
            "OTLP intake",
            [
                P(
                    "OTLP requests by answer",
                    """Export requests per second by signal and answer code. 400: malformed data from an
              emitter; 413: batch above the size limit; 415: unknown content type; 429/503:
              backpressure (emitters retry).""",
                    [
                        Q(
                            f"sum by (signal, code) (rate(syncwatch_otlp_requests_total{{{JOB}}}[$__rate_interval]))",
                            "{{signal}} {{code}}",
                        )
                    ],
                    unit="reqps",
                    width=12,
                ),
                P(
                    "Rejected OTLP requests",
                    """Share of export requests not answered with success. Any steady share means data is
              refused: the code says why (see the panel beside).""",
                    [
                        Q(
                            f'(sum by (signal) (rate(syncwatch_otlp_requests_total{{{JOB}, code!~"2.."}}[$__rate_interval])) or 0 * sum by (signal) (rate(syncwatch_otlp_requests_total{{{JOB}}}[$__rate_interval]))) / sum by (signal) (rate(syncwatch_otlp_requests_total{{{JOB}}}[$__rate_interval]))',
                            "{{signal}}",
                        )
                    ],
                    unit="percentunit",
                    width=12,
                    thresholds=[(None, "green"), (0.01, "red")],
                    threshold_style="line",
                ),
            ],
        ),
        (
            "Drops",
            [
                P(
                    "Items dropped (time range)",
                    """Everything syncwatch itself lost or refused in the selected range. Anything above
              0 pages (SyncwatchDroppingData): its view of the integration has holes.""",
                    [Q(f"sum(increase(syncwatch_dropped_total{{{JOB}}}[$__range])) or vector(0)")],
                    kind="stat",
                    width=6,
                    thresholds=[(None, "green"), (1, "red")],
                ),
                P(
                    "Drops by reason",
                    """Items dropped per second by reason. Read the reason, then the sidecar's log for the
              matching error; backpressure drops mean it needs more CPU or disk.""",
                    [Q(f"sum by (reason) (rate(syncwatch_dropped_total{{{JOB}}}[$__rate_interval]))", "{{reason}}")],
                    unit="ops",
                    width=18,
                ),
            ],
        ),
        (
            "Snapshot store",
            [
                P(
                    "Snapshot store size",
                    """Bytes of stored payload snapshots. Steady growth past the retention period means the
              sweeper is not deleting: check the oldest-snapshot age.""",
                    [Q(f"max by (instance) (syncwatch_snapshot_store_bytes{{{JOB}}})", "{{instance}}")],
                    unit="bytes",
                    width=8,
                ),
                P(
                    "Oldest snapshot against retention",
                    """Age of the oldest snapshot with the retention as a red dashed line.""",
                    [
                        Q(f"max by (instance) (syncwatch_snapshot_oldest_age_seconds{{{JOB}}})", "oldest {{instance}}"),
                        Q(
                            f"max by (instance) (syncwatch_snapshot_retention_seconds{{{JOB}}})",
                            "retention {{instance}}",
                        ),
                    ],
                    unit="s",
                    width=8,
                    reference_refs=("B",),
                ),
                P(
                    "Snapshots dropped",
                    """Snapshots that could not be stored, per second. Above 0: disk full or S3 errors,
              see the sidecar's log.""",
                    [
                        Q(
                            f'sum by (direction) (rate(syncwatch_snapshots_total{{{JOB}, result="dropped"}}[$__rate_interval]))',
                            "{{direction}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                    thresholds=[(None, "green"), (0.001, "red")],
                    threshold_style="line",
                ),
            ],
        ),
        (
            "Sidecar",
            [
                P(
                    "Scrape up",
                    """1 when Prometheus can scrape the sidecar. 0: it is down or unreachable and no
              integration alert can fire (SyncwatchDown).""",
                    [Q(f"up{{{JOB}}}", "{{instance}}")],
                    width=12,
                    thresholds=[(None, "red"), (1, "green")],
                    threshold_style="line",
                    min=None,
                ),
                P(
                    "Version",
                    """Running syncwatch version per instance; two versions at once mean a rollout is in
              progress or stuck.""",
                    [Q(f"count by (version) (syncwatch_build_info{{{JOB}}})", "{{version}}")],
                    kind="stat",
                    width=12,
                ),
            ],
        ),
        (
            "Replicas (ledger on PostgreSQL)",
            [
                P(
                    "Leaders",
                    """Replicas holding the leader lease, per ledger: 1 is right (always 1 with SQLite). 0 for
              a minute means nothing marks transactions overdue or samples the brokers
              (SyncwatchNoLeader pages); 2 or more for minutes is SyncwatchSeveralLeaders.""",
                    [Q(f"sum without ({REPLICAS}) (syncwatch_leader{{{JOB}}})", "{{job}} {{ledger}}")],
                    kind="stat",
                    width=4,
                    thresholds=[(None, "red"), (1, "green"), (2, "orange")],
                ),
                P(
                    "Leader per pod",
                    """1 on the replica that holds the lease in PostgreSQL, 0 on the others. The line moving
              from one pod to another is a leader change: the whole-ledger gauges (overdue, queue
              depths, collectors, reconcilers) move with it.""",
                    [Q(f"max by (job, pod, instance) (syncwatch_leader{{{JOB}}})", "{{pod}} {{instance}}")],
                    width=8,
                    min=None,
                ),
                P(
                    "Leader changes",
                    """Leases acquired and lost per pod. A change at a rollout or a node drain is expected;
              a pod that keeps losing it renews too late (CPU throttling, long pauses, a slow
              PostgreSQL): see the replicas' logs.""",
                    [
                        Q(
                            f"sum by (pod, change) (increase(syncwatch_leader_changes_total{{{JOB}}}[$__rate_interval]))",
                            "{{pod}} {{change}}",
                        )
                    ],
                    width=6,
                ),
                P(
                    "Handoff backlog",
                    """Spans the followers accepted and handed to the leader that it has not taken in yet.
              Near 0 is normal; growing for minutes, or above the red line, the leader falls behind
              (SyncwatchHandoffBacklog) and transactions are confirmed late: check its CPU and
              PostgreSQL's load.""",
                    [Q(_ledger(f"syncwatch_handoff_backlog_spans{{{JOB}}}"), "{{job}}")],
                    width=6,
                    thresholds=[(None, "green"), (50000, "red")],
                    threshold_style="line",
                ),
            ],
        ),
    ]
    variables = [
        _datasource_var(),
        _job_var(),
        _var(
            "collector",
            "Collector",
            f"label_values(syncwatch_collector_up{{{JOB}}}, collector)",
            "Broker collector by name.",
        ),
    ]
    return _dashboard(
        SELF_UID,
        "syncwatch health",
        "syncwatch's own health: collectors, OTLP intake and rejections, drops, snapshot store, replicas.",
        variables,
        rows,
    )


DASHBOARDS = {
    "erp-integration-health.json": erp_health,
    "syncwatch-health.json": self_health,
}


def render(build) -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if a committed JSON differs from the code")
    p.add_argument("--out-dir", type=Path, default=HERE)
    a = p.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = a.out_dir / name
        text = render(build)
        if a.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards: {', '.join(stale)}: run python dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
