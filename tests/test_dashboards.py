"""Grafana dashboards: generated from code, committed, and every query valid PromQL over syncwatch's
own metrics. (That every query returns data from a real Prometheus is in test_e2e_alerting.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prom_runners import PROMTOOL, substitute  # the same substitution the end-to-end run uses
from promql_scan import innermost_aggregations

from alerts import generate as alerts_gen
from dashboards import exported_metrics
from dashboards import generate as gen

SPEC = ROOT.parent / "shared" / "SPEC.md"
promtool = PROMTOOL


def _load(name: str) -> dict:
    return json.loads((ROOT / "dashboards" / name).read_text())


def _panels(d: dict) -> list[dict]:
    return [p for p in d["panels"] if p["type"] != "row"]


def _all_panels():
    return [(name, p) for name in gen.DASHBOARDS for p in _panels(_load(name))]


def _exprs() -> list[tuple[str, str]]:
    return [(f"{name}: {p['title']}", t["expr"]) for name, p in _all_panels() for t in p["targets"]]


def test_committed_json_is_what_the_code_generates():
    for name, build in gen.DASHBOARDS.items():
        committed = (ROOT / "dashboards" / name).read_text()
        assert committed == gen.render(build), f"dashboards/{name} is stale: run python dashboards/generate.py"
    assert gen.main(["--check"]) == 0


def test_check_mode_fails_on_a_hand_edited_dashboard(tmp_path):
    for name, build in gen.DASHBOARDS.items():
        (tmp_path / name).write_text(gen.render(build))
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 0
    d = json.loads((tmp_path / "syncwatch-health.json").read_text())
    d["title"] = "edited in Grafana"
    (tmp_path / "syncwatch-health.json").write_text(json.dumps(d))
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1


def test_sdk_is_pinned_exactly():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"grafana-foundation-sdk==[^"]+"', pyproject)


def test_stable_uids_match_the_alert_links():
    uids = {_load(n)["uid"] for n in gen.DASHBOARDS}
    assert (
        uids
        == {alerts_gen.ERP_DASHBOARD_UID, alerts_gen.SELF_DASHBOARD_UID}
        == {"syncwatch-erp-health", "syncwatch-self"}
    )
    rules = yaml.safe_load((ROOT / "alerts" / "syncwatch-rules.yml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                uid = re.match(r"https://grafana\.example/d/([\w-]+)", r["annotations"]["dashboard_url"]).group(1)
                assert uid in uids
                d = next(_load(n) for n in gen.DASHBOARDS if _load(n)["uid"] == uid)
                names = {v["name"] for v in d["templating"]["list"]}
                for var in re.findall(r"var-(\w+)=", r["annotations"]["dashboard_url"]):
                    assert var in names, f"{r['alert']} links var-{var}, which {uid} does not have"


def test_variables():
    erp = {v["name"]: v for v in _load("erp-integration-health.json")["templating"]["list"]}
    assert list(erp) == ["datasource", "job", "flow", "broker", "queue", "syncwatch_url"]
    assert erp["syncwatch_url"]["type"] == "textbox"
    assert erp["datasource"]["type"] == "datasource" and erp["datasource"]["query"] == "prometheus"
    for name in ("job", "flow", "broker", "queue"):
        assert erp[name]["datasource"]["uid"] == "${datasource}"
        assert erp[name]["includeAll"] and erp[name]["allValue"] == ".*"
    own = {v["name"] for v in _load("syncwatch-health.json")["templating"]["list"]}
    assert own == {"datasource", "job", "collector"}


def test_panels_link_to_the_web_view():
    links = {
        p["title"]: [link["url"] for link in p.get("links", [])]
        + [link["url"] for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]
        for p in _panels(_load("erp-integration-health.json"))
    }
    assert links["Overdue transactions"] == ["${syncwatch_url}/ui/transactions?state=overdue"]
    assert links["Overdue by flow"] == [
        "${syncwatch_url}/ui/transactions?state=overdue&flow=${__field.labels.flow:percentencode}"
    ]
    assert links["DLQ depth by queue"] == [
        "${syncwatch_url}/ui/dead-letters?queue=${__field.labels.queue:percentencode}"
    ]


def test_erp_dashboard_has_a_row_per_signal_and_a_silent_loss_row():
    rows = [p["title"] for p in _load("erp-integration-health.json")["panels"] if p["type"] == "row"]
    assert rows[0].startswith("Silent loss")
    assert [r.split(" ", 1)[1] for r in rows[1:]] == [
        "Correlation coverage",
        "Queue depth",
        "Retry state",
        "Dead-letter queues",
        "Payload snapshots",
        "Sync lag",
        "Reconciliation against the systems of record",
        "Data audits: field ownership and idempotency",
    ]
    silent = " ".join(t["expr"] for p in _panels(_load("erp-integration-health.json"))[:5] for t in p["targets"])
    for metric in (
        "syncwatch_transactions_overdue",
        "syncwatch_duplicate_applies_total",
        "syncwatch_transactions_total",
    ):
        assert metric in silent


def test_every_panel_is_described_has_a_unit_and_uses_the_datasource_variable():
    ids: dict[str, set] = {n: set() for n in gen.DASHBOARDS}
    for name, p in _all_panels():
        where = f"{name}: {p['title']}"
        assert len(p.get("description", "")) > 60, f"{where}: say what a bad value means and what to look at next"
        assert p["fieldConfig"]["defaults"].get("unit"), where
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert p["targets"], where
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), where
        assert p["id"] not in ids[name], where
        ids[name].add(p["id"])


def test_rates_use_rate_interval():
    for where, expr in _exprs():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            # $__range: totals over the picked range; 1h: the hourly trend panel.
            assert window in ("$__rate_interval", "$__range", "1h"), f"{where}: [{window}]"
        if re.search(r"\b(rate|increase)\(", expr) and "[1h]" not in expr and "$__range" not in expr:
            assert "$__rate_interval" in expr, where


def test_deadlines_are_drawn_as_thresholds():
    panels = {p["title"]: p for p in _panels(_load("erp-integration-health.json"))}
    lag = panels["Sync lag against the deadline"]
    deadline_ref = next(t["refId"] for t in lag["targets"] if "syncwatch_flow_deadline_seconds" in t["expr"])
    override = next(
        o for o in lag["fieldConfig"]["overrides"] if o["matcher"] == {"id": "byFrameRefID", "options": deadline_ref}
    )
    assert {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}} in override["properties"]
    share = panels["p95 sync lag as a share of the deadline"]
    assert {"color": "red", "value": 1} in share["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert share["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
    dlq = panels["DLQ depth by queue"]
    assert {"color": "red", "value": 1} in dlq["fieldConfig"]["defaults"]["thresholds"]["steps"]


def test_no_panel_sums_a_per_replica_gauge():
    # Three replicas on one ledger: a gauge every replica exports, or one that moves with the
    # leader lease (both replicas scraped for a moment), is taken with max/min/count over the
    # replicas before anything sums it; whole-ledger gauges lose the replica labels so a leader
    # change does not start a new line. syncwatch_leader's sum is the number of leaders.
    leader_only = set(exported_metrics.LEADER_GAUGES)
    per_replica = set(exported_metrics.PER_REPLICA_GAUGES) - {"syncwatch_leader"}
    seen: set[str] = set()
    for where, expr in _exprs():
        for gauge in leader_only | per_replica:
            for agg, clause in innermost_aggregations(expr, gauge):
                seen.add(gauge)
                if gauge in leader_only:
                    assert (agg, clause) == ("max", "without (instance, pod)") or (
                        agg == "max" and clause.startswith("by") and "instance" not in clause
                    ), f"{where}: {gauge} not taken as one series per ledger ({agg} {clause})"
                else:
                    assert agg in ("max", "min", "count"), f"{where}: {gauge} summed over replicas ({agg})"
    # the check covers what the dashboards show
    assert {"syncwatch_transactions_overdue", "syncwatch_dlq_messages", "syncwatch_flow_deadline_seconds"} <= seen


def test_the_reconciliation_row_shows_findings_that_cleared_summed_over_replicas():
    panels = {p["title"]: p for p in _panels(_load("erp-integration-health.json"))}
    exprs = [t["expr"] for t in panels["Findings found and resolved per hour"]["targets"]]
    assert exprs == [
        'sum by (flow, kind) (increase(syncwatch_reconcile_found_total{job=~"$job", flow=~"$flow"}[1h]))',
        'sum by (flow, kind) (increase(syncwatch_reconcile_resolved_total{job=~"$job", flow=~"$flow"}[1h]))',
    ]
    # a counter: each replica counts what it did, so the sum over replicas is the ledger's
    assert innermost_aggregations(exprs[1], "syncwatch_reconcile_resolved_total") == [("sum", "by (flow, kind)")]


def test_the_check_catches_a_sum_over_replicas():
    assert innermost_aggregations(
        "sum by (flow) (syncwatch_transactions_overdue)", "syncwatch_transactions_overdue"
    ) == [("sum", "by (flow)")]
    assert innermost_aggregations("syncwatch_transactions_overdue > 0", "syncwatch_transactions_overdue") == [("", "")]
    assert innermost_aggregations(
        'sum(max without (instance, pod) (last_over_time(syncwatch_dlq_messages{q="a(b"}[2m])))',
        "syncwatch_dlq_messages",
    ) == [("max", "without (instance, pod)")]
    assert innermost_aggregations("sum(x) by (job) / max(syncwatch_leader)", "syncwatch_leader") == [("max", "")]


def test_replicas_row():
    panels = {p["title"]: p for p in _panels(_load("syncwatch-health.json"))}
    rows = [p["title"] for p in _load("syncwatch-health.json")["panels"] if p["type"] == "row"]
    assert rows[-1] == "Replicas (ledger on PostgreSQL)"
    assert [t["expr"] for t in panels["Leaders"]["targets"]] == [
        'sum without (instance, pod) (syncwatch_leader{job=~"$job"})'
    ]
    assert (
        panels["Leader per pod"]["targets"][0]["expr"] == 'max by (job, pod, instance) (syncwatch_leader{job=~"$job"})'
    )
    assert "syncwatch_leader_changes_total" in panels["Leader changes"]["targets"][0]["expr"]
    backlog = panels["Handoff backlog"]
    assert backlog["targets"][0]["expr"] == 'max without (instance, pod) (syncwatch_handoff_backlog_spans{job=~"$job"})'
    assert {"color": "red", "value": 50000} in backlog["fieldConfig"]["defaults"]["thresholds"]["steps"]


def test_queries_use_only_metrics_syncwatch_exports():
    exported = exported_metrics.exported_series()
    for where, expr in _exprs():
        stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        names = set(re.findall(r"\b(syncwatch[a-z0-9_:]*|up)\b", stripped))
        assert names, where
        assert names <= exported, f"{where}: {names - exported} not exported by syncwatch"
    variables = [v["query"] for n in gen.DASHBOARDS for v in _load(n)["templating"]["list"] if v["type"] == "query"]
    for q in variables:
        assert re.match(r"label_values\((\w+)", q).group(1) in exported, q


@pytest.mark.prometheus
@pytest.mark.skipif(promtool is None, reason="promtool missing: run scripts/system-deps.sh (Debian package prometheus)")
def test_every_query_is_valid_promql(tmp_path):
    # promtool parses each expression of a rule file: feed it every panel query as a recording rule.
    exprs = _exprs()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dashboard_query_{i}", "expr": substitute(e)} for i, (_, e) in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout
    # the check is real: a broken query fails it
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x", "expr": "sum by (flow (x)"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0


def test_exported_metric_list_matches_spec_and_the_sidecar_registry():
    if SPEC.exists():
        text = SPEC.read_text()
        section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
        spec_names = set(re.findall(r"`(syncwatch_[a-z_]+)(?:\{|`)", section))
        assert spec_names == set(exported_metrics.spec_base_names())
    # Types as the sidecar registers them (the metrics that exist in the code so far).
    from prometheus_client import CollectorRegistry

    from syncwatch.metrics.registry import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    try:
        from syncwatch.collectors.metrics import CollectorMetrics

        CollectorMetrics(registry)
    except ImportError:
        pass
    want = {
        "counter": exported_metrics.COUNTERS,
        "gauge": exported_metrics.GAUGES,
        "histogram": exported_metrics.HISTOGRAMS,
    }
    checked = 0
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        for kind, names in want.items():
            if name in names:
                assert family.type == kind, f"{name}: registered as {family.type}, listed as {kind}"
                checked += 1
    assert checked >= 20
